//! Token verification (HS256 with a shared secret, RS256 or ES256 with a PEM
//! public key, RS256 / ES256 / EdDSA with the keys of a JWK Set),
//! development tokens, and minting for the `token` subcommand.
//!
//! The algorithm is fixed by configuration (or, with a JWK Set, by the type
//! of the key the token's `kid` selects), never taken from the token: a
//! token signed with another algorithm (HS256 against a public key, `none`)
//! fails as [`AuthError::Invalid`].
//!
//! Layout: `jwks.rs` (fetching and caching the JWK Set), `peers.rs` (the
//! peers claim), and here the verifier that uses both.

mod jwks;
mod peers;

pub use jwks::{JwksCache, JwksError, FETCH_TIMEOUT, MAX_BODY, ON_DEMAND_INTERVAL};
pub use peers::{PeerPolicy, PeersClaimError};

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::AuthSettings;
use crate::protocol::ErrorCode;

/// The static development pairs, accepted only in development mode.
pub const DEV_TOKENS: [(&str, &str); 2] = [
    ("test_client_1", "test_token_1"),
    ("test_client_2", "test_token_2"),
];

/// Why a token is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Bad shape, bad signature, wrong algorithm, wrong issuer or audience, missing claim.
    #[error("invalid token: {0}")]
    Invalid(&'static str),
    /// `sub` is not the CONNECT's `client_id`.
    #[error("token subject does not match client_id")]
    SubjectMismatch,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
}

impl AuthError {
    /// The protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Expired => ErrorCode::TokenExpired,
            _ => ErrorCode::AuthFailed,
        }
    }

    /// A bounded label for the auth-failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Invalid(reason) => reason,
            AuthError::SubjectMismatch => "subject_mismatch",
            AuthError::Expired => "expired",
        }
    }
}

/// Why the authenticator cannot be built from the settings.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The public key file could not be read.
    #[error("cannot read auth.public_key_path {path}: {source}")]
    ReadKey {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is neither an RSA nor an EC public key in PEM.
    #[error("auth.public_key_path {0} is not an RSA or EC public key in PEM format")]
    BadKey(String),
    /// More than one of secret, public key and JWK Set URL is set.
    #[error("set only one of auth.token_secret, auth.public_key_path and auth.jwks_url")]
    Ambiguous,
    /// The JWK Set client could not be set up.
    #[error("auth.jwks_url: {0}")]
    Jwks(#[from] JwksError),
    /// The `token` subcommand needs a secret.
    #[error("auth.token_secret is not set; the token subcommand signs with it")]
    NoSecret,
}

/// A verified token: who it is for, whom it may signal, and when it stops
/// being valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// When the session must end unless refreshed (`exp` + leeway);
    /// `None` for development tokens.
    pub expires_at: Option<SystemTime>,
    /// The targets the token's peers claim allows (any without the claim).
    pub peers: PeerPolicy,
}

/// The claims a node reads; `iss` and `aud` (a string or an array) are
/// checked by the validation itself. The rest are kept to find the peers
/// claim, whose name is configured.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    #[serde(flatten)]
    rest: HashMap<String, serde_json::Value>,
}

/// The claims the `token` subcommand writes.
#[derive(Debug, Serialize)]
struct MintedClaims {
    sub: String,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<String>,
    /// The peers claim under its configured name, when patterns are given.
    #[serde(flatten)]
    peers: HashMap<String, Vec<String>>,
}

enum Mode {
    Development,
    Jwt {
        key: DecodingKey,
        validation: Box<Validation>,
    },
    Jwks {
        cache: Arc<JwksCache>,
        /// One validation per algorithm a set key may have.
        validations: Box<[(Algorithm, Validation)]>,
    },
}

/// Verifies CONNECT tokens.
pub struct Authenticator {
    mode: Mode,
    leeway: u64,
    peers_claim: String,
    require_peers_claim: bool,
}

/// The reason [`Authenticator::verify_cached`] gives for a `kid` the JWK Set
/// does not hold (the async [`Authenticator::verify`] then refetches).
const UNKNOWN_KID: AuthError = AuthError::Invalid("unknown_kid");

impl Authenticator {
    /// Builds the verifier: development mode when neither a secret nor a key
    /// is configured (the caller decides whether that is allowed).
    pub fn from_settings(settings: &AuthSettings) -> Result<Authenticator, AuthSetupError> {
        let configured = [
            settings.token_secret.is_some(),
            settings.public_key_path.is_some(),
            settings.jwks_url.is_some(),
        ];
        if configured.iter().filter(|on| **on).count() > 1 {
            return Err(AuthSetupError::Ambiguous);
        }
        let mode = if let Some(url) = &settings.jwks_url {
            let refresh = Duration::from_secs(settings.jwks_refresh);
            let validations = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]
                .map(|alg| (alg, validation(settings, alg)));
            Mode::Jwks {
                cache: Arc::new(JwksCache::new(url, refresh)?),
                validations: Box::new(validations),
            }
        } else {
            let (key, algorithm) = match (&settings.token_secret, &settings.public_key_path) {
                (Some(secret), _) => (
                    DecodingKey::from_secret(secret.expose().as_bytes()),
                    Algorithm::HS256,
                ),
                (None, Some(path)) => load_public_key(path)?,
                (None, None) => {
                    return Ok(Authenticator {
                        mode: Mode::Development,
                        leeway: settings.leeway,
                        peers_claim: settings.peers_claim.clone(),
                        require_peers_claim: settings.require_peers_claim,
                    })
                }
            };
            Mode::Jwt {
                key,
                validation: Box::new(validation(settings, algorithm)),
            }
        };
        Ok(Authenticator {
            mode,
            leeway: settings.leeway,
            peers_claim: settings.peers_claim.clone(),
            require_peers_claim: settings.require_peers_claim,
        })
    }

    /// Whether the static development tokens are accepted.
    pub fn is_development(&self) -> bool {
        matches!(self.mode, Mode::Development)
    }

    /// Whether tokens can be verified: false only while a JWK Set has not
    /// been fetched yet (readiness answers 503 meanwhile).
    pub fn keys_ready(&self) -> bool {
        match &self.mode {
            Mode::Jwks { cache, .. } => cache.is_loaded(),
            _ => true,
        }
    }

    /// Starts the scheduled JWK Set fetches, counting into `metrics`; `None`
    /// without `auth.jwks_url`. Abort the handle to stop them.
    pub fn start_key_refresh(
        &self,
        metrics: &crate::metrics::Metrics,
    ) -> Option<tokio::task::JoinHandle<()>> {
        match &self.mode {
            Mode::Jwks { cache, .. } => Some(cache.spawn_refresh(metrics.access.clone())),
            _ => None,
        }
    }

    /// Verifies that `token` authenticates `client_id`. With a JWK Set and a
    /// `kid` it does not hold, refetches the set once (rate-limited, bounded
    /// by [`FETCH_TIMEOUT`]) before refusing; otherwise completes at once.
    pub async fn verify(&self, client_id: &str, token: &str) -> Result<Verified, AuthError> {
        match self.verify_cached(client_id, token) {
            Err(e) if e == UNKNOWN_KID => {
                if let Mode::Jwks { cache, .. } = &self.mode {
                    // Boxed: the fetch's future must not grow every caller's.
                    Box::pin(cache.refetch_for_unknown_kid()).await;
                }
                self.verify_cached(client_id, token)
            }
            other => other,
        }
    }

    /// Verifies with the keys at hand, never waiting on the network.
    pub fn verify_cached(&self, client_id: &str, token: &str) -> Result<Verified, AuthError> {
        let claims = match &self.mode {
            Mode::Development => {
                let known = DEV_TOKENS
                    .iter()
                    .any(|(id, t)| *id == client_id && *t == token);
                if !known {
                    return Err(AuthError::Invalid("unknown_development_token"));
                }
                if self.require_peers_claim {
                    return Err(AuthError::Invalid("missing_peers_claim"));
                }
                return Ok(Verified {
                    expires_at: None,
                    peers: PeerPolicy::Any,
                });
            }
            Mode::Jwt { key, validation } => {
                jsonwebtoken::decode::<Claims>(token, key, validation)
                    .map_err(|e| classify(e.kind()))?
                    .claims
            }
            Mode::Jwks { cache, validations } => {
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|_| AuthError::Invalid("malformed"))?;
                let set = cache.current();
                let found = match set.lookup(header.kid.as_deref()) {
                    jwks::Lookup::Found(found) => found,
                    jwks::Lookup::UnknownKid => return Err(UNKNOWN_KID),
                    jwks::Lookup::Ambiguous => return Err(AuthError::Invalid("missing_kid")),
                };
                let validation = validations
                    .iter()
                    .find(|(alg, _)| *alg == found.algorithm)
                    .map(|(_, v)| v)
                    .ok_or(AuthError::Invalid("wrong_algorithm"))?;
                jsonwebtoken::decode::<Claims>(token, &found.key, validation)
                    .map_err(|e| classify(e.kind()))?
                    .claims
            }
        };
        if claims.sub != client_id {
            return Err(AuthError::SubjectMismatch);
        }
        let peers = match claims.rest.get(&self.peers_claim) {
            Some(value) => {
                PeerPolicy::from_claim(value).map_err(|_| AuthError::Invalid("bad_peers_claim"))?
            }
            None if self.require_peers_claim => {
                return Err(AuthError::Invalid("missing_peers_claim"))
            }
            None => PeerPolicy::Any,
        };
        let expires_at = UNIX_EPOCH + Duration::from_secs(claims.exp.saturating_add(self.leeway));
        Ok(Verified {
            expires_at: Some(expires_at),
            peers,
        })
    }
}

/// The validation of every token: the one algorithm, `exp` and `sub`
/// required, `iss` and `aud` when configured.
fn validation(settings: &AuthSettings, algorithm: Algorithm) -> Validation {
    let mut validation = Validation::new(algorithm);
    validation.algorithms = vec![algorithm];
    validation.leeway = settings.leeway;
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.validate_exp = true;
    if let Some(iss) = &settings.issuer {
        validation.set_issuer(&[iss]);
        validation.required_spec_claims.insert("iss".into());
    }
    match &settings.audience {
        Some(aud) => {
            validation.set_audience(&[aud]);
            validation.required_spec_claims.insert("aud".into());
        }
        None => validation.validate_aud = false,
    }
    validation
}

fn load_public_key(path: &Path) -> Result<(DecodingKey, Algorithm), AuthSetupError> {
    let pem = std::fs::read(path).map_err(|source| AuthSetupError::ReadKey {
        path: path.display().to_string(),
        source,
    })?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((key, Algorithm::RS256));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((key, Algorithm::ES256));
    }
    Err(AuthSetupError::BadKey(path.display().to_string()))
}

fn classify(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidSignature => AuthError::Invalid("bad_signature"),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::Invalid("wrong_algorithm")
        }
        ErrorKind::InvalidIssuer => AuthError::Invalid("wrong_issuer"),
        ErrorKind::InvalidAudience => AuthError::Invalid("wrong_audience"),
        ErrorKind::MissingRequiredClaim(_) => AuthError::Invalid("missing_claim"),
        ErrorKind::ImmatureSignature => AuthError::Invalid("not_yet_valid"),
        _ => AuthError::Invalid("malformed"),
    }
}

/// Mints an HS256 token for `client_id` valid for `ttl`, with the configured
/// issuer and audience.
pub fn mint(
    settings: &AuthSettings,
    client_id: &str,
    ttl: Duration,
) -> Result<String, AuthSetupError> {
    mint_with_peers(settings, client_id, ttl, &[])
}

/// Like [`mint`], with the peers claim (under `auth.peers_claim`) when
/// `peers` is not empty.
pub fn mint_with_peers(
    settings: &AuthSettings,
    client_id: &str,
    ttl: Duration,
    peers: &[String],
) -> Result<String, AuthSetupError> {
    let secret = settings
        .token_secret
        .as_ref()
        .ok_or(AuthSetupError::NoSecret)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let claims = MintedClaims {
        sub: client_id.to_owned(),
        exp: now.saturating_add(ttl.as_secs()),
        iat: Some(now),
        iss: settings.issuer.clone(),
        aud: settings.audience.clone(),
        peers: if peers.is_empty() {
            HashMap::new()
        } else {
            HashMap::from([(settings.peers_claim.clone(), peers.to_vec())])
        },
    };
    let key = EncodingKey::from_secret(secret.expose().as_bytes());
    // HS256 signing with an in-memory key has no failure mode for these claims.
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .map_err(|_| AuthSetupError::NoSecret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn settings(secret: &str) -> AuthSettings {
        AuthSettings {
            token_secret: Some(Secret::new(secret)),
            ..AuthSettings::default()
        }
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(claims: &serde_json::Value, alg: Algorithm, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn minted_tokens_verify() {
        let s = settings("k");
        let auth = Authenticator::from_settings(&s).unwrap();
        let t = mint(&s, "alice", Duration::from_secs(60)).unwrap();
        let v = auth.verify_cached("alice", &t).unwrap();
        assert!(v.expires_at.unwrap() > SystemTime::now());
        assert_eq!(
            auth.verify_cached("bob", &t),
            Err(AuthError::SubjectMismatch)
        );
    }

    #[test]
    fn wrong_secret_expired_and_missing_exp_fail() {
        let auth = Authenticator::from_settings(&settings("k")).unwrap();
        let other = token(
            &serde_json::json!({"sub":"a","exp":now()+60}),
            Algorithm::HS256,
            "x",
        );
        assert_eq!(
            auth.verify_cached("a", &other).unwrap_err().code(),
            ErrorCode::AuthFailed
        );
        let expired = token(
            &serde_json::json!({"sub":"a","exp":now()-5}),
            Algorithm::HS256,
            "k",
        );
        assert_eq!(auth.verify_cached("a", &expired), Err(AuthError::Expired));
        let no_exp = token(&serde_json::json!({"sub":"a"}), Algorithm::HS256, "k");
        assert_eq!(
            auth.verify_cached("a", &no_exp).unwrap_err().code(),
            ErrorCode::AuthFailed
        );
        assert!(auth.verify_cached("a", "garbage").is_err());
    }

    #[test]
    fn alg_none_and_other_hmac_are_refused() {
        let auth = Authenticator::from_settings(&settings("k")).unwrap();
        // {"alg":"none","typ":"JWT"} . {"sub":"a","exp":9999999999} . (empty)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5fQ.";
        assert!(auth.verify_cached("a", none).is_err());
        let hs512 = token(
            &serde_json::json!({"sub":"a","exp":now()+60}),
            Algorithm::HS512,
            "k",
        );
        assert_eq!(
            auth.verify_cached("a", &hs512),
            Err(AuthError::Invalid("wrong_algorithm"))
        );
    }

    #[test]
    fn issuer_and_audience_are_checked_when_configured() {
        let mut s = settings("k");
        s.issuer = Some("me".into());
        s.audience = Some("sm".into());
        let auth = Authenticator::from_settings(&s).unwrap();
        let good = mint(&s, "a", Duration::from_secs(60)).unwrap();
        assert!(auth.verify_cached("a", &good).is_ok());
        let wrong_iss = token(
            &serde_json::json!({"sub":"a","exp":now()+60,"iss":"x","aud":"sm"}),
            Algorithm::HS256,
            "k",
        );
        assert!(auth.verify_cached("a", &wrong_iss).is_err());
        let aud_array = token(
            &serde_json::json!({"sub":"a","exp":now()+60,"iss":"me","aud":["other","sm"]}),
            Algorithm::HS256,
            "k",
        );
        assert!(
            auth.verify_cached("a", &aud_array).is_ok(),
            "aud may be an array"
        );
        let no_aud = token(
            &serde_json::json!({"sub":"a","exp":now()+60,"iss":"me"}),
            Algorithm::HS256,
            "k",
        );
        assert!(auth.verify_cached("a", &no_aud).is_err());
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn key_settings(public: &str) -> AuthSettings {
        AuthSettings {
            public_key_path: Some(fixture(public)),
            ..AuthSettings::default()
        }
    }

    fn signed(alg: Algorithm, key: &EncodingKey, sub: &str) -> String {
        let claims = serde_json::json!({"sub": sub, "exp": now() + 60});
        jsonwebtoken::encode(&Header::new(alg), &claims, key).unwrap()
    }

    #[test]
    fn rs256_and_es256_verify_with_a_public_key() {
        let rsa =
            EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa_private.pem")).unwrap()).unwrap();
        let ec =
            EncodingKey::from_ec_pem(&std::fs::read(fixture("ec_private.pem")).unwrap()).unwrap();
        let rsa_auth = Authenticator::from_settings(&key_settings("rsa_public.pem")).unwrap();
        let ec_auth = Authenticator::from_settings(&key_settings("ec_public.pem")).unwrap();
        assert!(!rsa_auth.is_development());
        assert!(rsa_auth
            .verify_cached("a", &signed(Algorithm::RS256, &rsa, "a"))
            .is_ok());
        assert!(ec_auth
            .verify_cached("a", &signed(Algorithm::ES256, &ec, "a"))
            .is_ok());
        assert_eq!(
            rsa_auth.verify_cached("b", &signed(Algorithm::RS256, &rsa, "a")),
            Err(AuthError::SubjectMismatch)
        );
        // A token for the other key type is refused.
        assert!(rsa_auth
            .verify_cached("a", &signed(Algorithm::ES256, &ec, "a"))
            .is_err());
        assert!(ec_auth
            .verify_cached("a", &signed(Algorithm::RS256, &rsa, "a"))
            .is_err());
    }

    #[test]
    fn algorithm_confusion_is_refused() {
        // The classic attack: sign HS256 with the public key's bytes as the secret.
        for public in ["rsa_public.pem", "ec_public.pem"] {
            let auth = Authenticator::from_settings(&key_settings(public)).unwrap();
            let pem = std::fs::read(fixture(public)).unwrap();
            let forged = signed(Algorithm::HS256, &EncodingKey::from_secret(&pem), "a");
            assert_eq!(
                auth.verify_cached("a", &forged),
                Err(AuthError::Invalid("wrong_algorithm"))
            );
            let none =
                "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIiwiZXhwIjo5OTk5OTk5OTk5fQ.";
            assert!(auth.verify_cached("a", none).is_err());
        }
    }

    #[test]
    fn unusable_keys_fail_setup() {
        assert!(matches!(
            Authenticator::from_settings(&key_settings("missing.pem")),
            Err(AuthSetupError::ReadKey { .. })
        ));
        let mut both = key_settings("rsa_public.pem");
        both.token_secret = Some(Secret::new("k"));
        assert!(matches!(
            Authenticator::from_settings(&both),
            Err(AuthSetupError::Ambiguous)
        ));
    }

    #[test]
    fn development_mode_accepts_only_the_static_pairs() {
        let auth = Authenticator::from_settings(&AuthSettings::default()).unwrap();
        assert!(auth.is_development());
        assert!(auth.verify_cached("test_client_1", "test_token_1").is_ok());
        assert!(auth.verify_cached("test_client_2", "test_token_2").is_ok());
        assert!(auth.verify_cached("test_client_1", "test_token_2").is_err());
        assert!(auth.verify_cached("alice", "test_token_1").is_err());
    }

    #[test]
    fn leeway_extends_the_session_end() {
        let mut s = settings("k");
        s.leeway = 30;
        let auth = Authenticator::from_settings(&s).unwrap();
        let exp = now() - 5;
        let t = token(
            &serde_json::json!({"sub":"a","exp":exp}),
            Algorithm::HS256,
            "k",
        );
        let v = auth.verify_cached("a", &t).unwrap();
        assert_eq!(
            v.expires_at,
            Some(UNIX_EPOCH + Duration::from_secs(exp + 30))
        );
    }

    #[test]
    fn the_peers_claim_becomes_the_policy() {
        let mut s = settings("k");
        let auth = Authenticator::from_settings(&s).unwrap();
        let peers = ["bob".to_owned(), "room-1:*".to_owned()];
        let t = mint_with_peers(&s, "alice", Duration::from_secs(60), &peers).unwrap();
        let v = auth.verify_cached("alice", &t).unwrap();
        assert!(v.peers.allows("bob") && v.peers.allows("room-1:x"));
        assert!(!v.peers.allows("carol"));
        let plain = mint(&s, "alice", Duration::from_secs(60)).unwrap();
        assert_eq!(
            auth.verify_cached("alice", &plain).unwrap().peers,
            PeerPolicy::Any
        );
        // A claim of the wrong JSON type is an invalid token.
        let wrong = token(
            &serde_json::json!({"sub":"a","exp":now()+60,"peers":"bob"}),
            Algorithm::HS256,
            "k",
        );
        assert_eq!(
            auth.verify_cached("a", &wrong),
            Err(AuthError::Invalid("bad_peers_claim"))
        );
        // Another claim name, and the claim required.
        s.peers_claim = "sm_peers".into();
        s.require_peers_claim = true;
        let strict = Authenticator::from_settings(&s).unwrap();
        assert_eq!(
            strict.verify_cached("alice", &plain),
            Err(AuthError::Invalid("missing_peers_claim"))
        );
        let named = mint_with_peers(&s, "alice", Duration::from_secs(60), &peers).unwrap();
        assert!(strict.verify_cached("alice", &named).is_ok());
        assert!(
            strict.verify_cached("alice", &t).is_err(),
            "the claim under the default name does not count"
        );
    }

    #[test]
    fn a_jwks_url_excludes_the_other_key_sources() {
        let mut s = settings("k");
        s.jwks_url = Some("http://127.0.0.1:9/jwks.json".into());
        assert!(matches!(
            Authenticator::from_settings(&s),
            Err(AuthSetupError::Ambiguous)
        ));
        s.token_secret = None;
        let auth = Authenticator::from_settings(&s).unwrap();
        assert!(!auth.keys_ready(), "not ready before the first fetch");
        assert!(!auth.is_development());
    }
}
