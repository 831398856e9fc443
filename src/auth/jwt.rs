//! Human administrators: the platform-issued JWTs (`authorization: Bearer <jwt>`) that the admin
//! RPCs accept besides API keys, as an OIDC identity provider or the platform's auth proxy issues
//! them. A token is accepted when all of this holds:
//!
//! - Its header names RS256, ES256 or EdDSA, and a configured key of that algorithm (the one its
//!   `kid` names, when it names one) verifies its signature. A key is used only with its own
//!   algorithm, inferred from its type or stated by its `alg`, never with the one the token asks
//!   for: `alg: none` and HMAC tokens are refused (an HMAC made with a *public* key proves nothing:
//!   the key-confusion attack), and so are symmetric keys in the key set.
//! - `iss` is the configured issuer, `aud` names the configured audience, `exp` has not passed
//!   and `nbf` (if any) has, each within `leeway_secs` of clock skew.
//! - The configured claims give a user ID, an organization ID (a UUID, or `default_org`) and the
//!   permissions of the user's global role; the display name is optional (the user ID stands in).
//!
//! Keys come from a JWKS file (re-read when it changes, looked at once a second) or a JWKS URL
//! (fetched at start, every `jwks_refresh_secs`, and sooner when a token names a key not in the
//! set, at most every [`MIN_REFETCH_INTERVAL`]), by a background task ([`UserTokens::keep_fresh`]):
//! a request waits for a refresh only when its token names a key not in the set. A set that fails
//! to load leaves the previous one in use. The user's principal has type USER: what they change is
//! recorded under their name, and the permission rules are the same as for keys.
//!
//! Every refusal is the UNAUTHENTICATED answer a wrong API key gets; the reason is logged at DEBUG,
//! never the token.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant, SystemTime},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
};
use serde_json::Value;

use super::credential::MAX_JWT_LEN;
use crate::{
    config::JwtConfig,
    error::{Error, Result},
    pb::{Principal, PrincipalType},
};

/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Most keys kept from one JWKS.
const MAX_KEYS: usize = 64;
/// Smallest RSA modulus trusted, in bytes (2048 bits).
const MIN_RSA_MODULUS_BYTES: usize = 256;
/// Largest RSA modulus the verifier handles, in bytes (8192 bits).
const MAX_RSA_MODULUS_BYTES: usize = 1024;
/// How often a JWKS file is looked at for changes.
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How soon after one fetch of a JWKS URL a token naming an unknown key may cause another: new
/// keys are picked up within seconds of their first use, and junk `kid`s cannot flood the issuer.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(5);
/// How long one fetch of a JWKS URL may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest user ID accepted, in characters (the audit trail's actor filter takes as many).
const MAX_USER_ID_CHARS: usize = 200;
/// Most permissions read from a token.
const MAX_PERMISSIONS: usize = 1024;
/// Longest permission name kept.
const MAX_PERMISSION_CHARS: usize = 128;

/// One key that verifies signatures with one algorithm.
struct VerifyingKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// The keys in use.
#[derive(Default)]
struct KeySet(Vec<VerifyingKey>);

impl KeySet {
    /// Parses a JWKS document. Keys that cannot verify RS256, ES256 or EdDSA signatures are
    /// skipped with a warning (an issuer's set often holds encryption or other keys too).
    ///
    /// # Errors
    /// A message when the document is not a JWKS at all.
    fn parse(document: &[u8]) -> std::result::Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<Value>,
        }
        let document: Document = serde_json::from_slice(document).map_err(|e| format!("not a JWKS: {e}"))?;
        let total = document.keys.len();
        let mut keys = Vec::new();
        for (index, value) in document.keys.into_iter().enumerate() {
            let kid = value.get("kid").and_then(Value::as_str).map(str::to_owned);
            let key = serde_json::from_value::<Jwk>(value).map_err(|e| e.to_string()).and_then(|jwk| {
                let alg = algorithm_of(&jwk)?;
                let key = DecodingKey::from_jwk(&jwk).map_err(|e| e.to_string())?;
                Ok(VerifyingKey { kid: kid.clone(), alg, key })
            });
            match key {
                Ok(key) if keys.len() < MAX_KEYS => keys.push(key),
                Ok(_) => tracing::warn!(index, ?kid, "JWKS key skipped: more than {MAX_KEYS} keys"),
                Err(reason) => tracing::warn!(index, ?kid, %reason, "JWKS key skipped"),
            }
        }
        if keys.is_empty() {
            // Installing it would refuse everyone: keep the set in use instead.
            return Err(format!("no usable key among {total}"));
        }
        Ok(Self(keys))
    }

    /// The key that may have signed a token with `alg` and `kid`: the one of that `kid` and
    /// algorithm, or, for a token naming no key, the only key of its algorithm (never a search
    /// through several).
    fn candidate(&self, alg: Algorithm, kid: Option<&str>) -> Option<&VerifyingKey> {
        let mut keys = self.0.iter().filter(|key| key.alg == alg && (kid.is_none() || key.kid.as_deref() == kid));
        let first = keys.next()?;
        keys.next().is_none().then_some(first)
    }
}

/// The one algorithm `jwk` may verify: its type's, which its `alg`, if given, must agree with.
fn algorithm_of(jwk: &Jwk) -> std::result::Result<Algorithm, String> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key".into());
    }
    let bytes = |field: &str, value: &str| {
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, value)
            .map_err(|_| format!("{field} is not base64url"))
    };
    // The key material is checked here, once: a verifier given a short key may panic.
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let modulus = bytes("n", &rsa.n)?;
            let length = modulus.iter().skip_while(|b| **b == 0).count();
            if !(MIN_RSA_MODULUS_BYTES..=MAX_RSA_MODULUS_BYTES).contains(&length) {
                return Err(format!("an RSA key of {} bits; 2048 to 8192 are accepted", length * 8));
            }
            let exponent = bytes("e", &rsa.e)?;
            let exponent = exponent.iter().skip_while(|b| **b == 0).copied().collect::<Vec<u8>>();
            if exponent.is_empty()
                || exponent.len() > 4
                || exponent.last().is_some_and(|b| b % 2 == 0)
                || exponent == [1]
            {
                return Err("an RSA public exponent that is not an odd number from 3 to 2^32".into());
            }
            Algorithm::RS256
        }
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            if bytes("x", &ec.x)?.len() != 32 || bytes("y", &ec.y)?.len() != 32 {
                return Err("P-256 coordinates must be 32 bytes each".into());
            }
            Algorithm::ES256
        }
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            if bytes("x", &okp.x)?.len() != 32 {
                return Err("an Ed25519 public key must be 32 bytes".into());
            }
            Algorithm::EdDSA
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("a symmetric key: never trusted (whoever holds it could mint tokens)".into());
        }
        _ => return Err("not an RSA, P-256 or Ed25519 public key".into()),
    };
    match jwk.common.key_algorithm {
        None => Ok(alg),
        Some(KeyAlgorithm::RS256) if alg == Algorithm::RS256 => Ok(alg),
        Some(KeyAlgorithm::ES256) if alg == Algorithm::ES256 => Ok(alg),
        Some(KeyAlgorithm::EdDSA) if alg == Algorithm::EdDSA => Ok(alg),
        Some(other) => Err(format!("alg {other:?}: only RS256, ES256 and EdDSA, each for its own key type")),
    }
}

/// Where the keys come from.
enum Source {
    /// A file, re-read when its modification time or size changes.
    File { path: PathBuf, seen: Mutex<FileSeen> },
    /// A URL, fetched again every `refresh`.
    Url { url: String, client: reqwest::Client, refresh: Duration, fetched: tokio::sync::Mutex<Fetched> },
}

/// What was last seen of a JWKS file.
struct FileSeen {
    checked: Instant,
    stamp: Option<FileStamp>,
}

/// What identifies one version of a file: a replaced file has another inode, a rewritten one
/// another change time (which, unlike the modification time, no copying tool can preserve).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    inode: u64,
    changed: (i64, i64),
    modified: SystemTime,
    len: u64,
}

/// When a JWKS URL was last fetched.
#[derive(Default)]
struct Fetched {
    /// The last attempt, successful or not.
    attempt: Option<Instant>,
    /// The last success.
    success: Option<Instant>,
}

/// Verifies platform JWTs; see the module docs.
pub struct UserTokens {
    config: JwtConfig,
    default_org: Option<uuid::Uuid>,
    source: Source,
    keys: RwLock<Arc<KeySet>>,
}

impl std::fmt::Debug for UserTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserTokens").field("issuer", &self.config.issuer).finish_non_exhaustive()
    }
}

impl UserTokens {
    /// The verifier `config` describes, `None` when JWTs are off. A JWKS file must load now; a
    /// JWKS URL that cannot be fetched now is tried again when a token arrives (tokens are refused
    /// meanwhile), so an identity provider's outage does not keep apikeys from starting.
    ///
    /// # Errors
    /// A message for the operator: the file cannot be read or is not a JWKS, or the HTTP client
    /// cannot be built.
    pub async fn from_config(config: &JwtConfig) -> std::result::Result<Option<Self>, String> {
        if !config.enabled() {
            return Ok(None);
        }
        config.validate()?;
        // Validated: empty or a UUID.
        let default_org = config.default_org.parse().ok();
        let source = match &config.jwks_file {
            Some(path) => {
                Source::File { path: path.clone(), seen: Mutex::new(FileSeen { checked: Instant::now(), stamp: None }) }
            }
            None => {
                // One process-wide rustls provider (ring, as tonic's TLS uses); already set is fine.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let client = reqwest::Client::builder()
                    .timeout(FETCH_TIMEOUT)
                    // No downgrade from https by a redirect.
                    .https_only(config.jwks_url.starts_with("https://"))
                    .redirect(reqwest::redirect::Policy::limited(3))
                    .user_agent(concat!("apikeys/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| format!("jwt.jwks_url: cannot make an HTTP client: {e}"))?;
                Source::Url {
                    url: config.jwks_url.clone(),
                    client,
                    refresh: Duration::from_secs(config.jwks_refresh_secs),
                    fetched: tokio::sync::Mutex::default(),
                }
            }
        };
        let tokens = Self { config: config.clone(), default_org, source, keys: RwLock::default() };
        match &tokens.source {
            Source::File { path, seen } => {
                let stamp = file_stamp(path);
                let set = read_file(path).map_err(|e| format!("jwt.jwks_file {}: {e}", path.display()))?;
                tokens.install(set);
                if let Ok(mut seen) = seen.lock() {
                    seen.stamp = stamp;
                }
            }
            Source::Url { .. } => tokens.refresh(true).await,
        }
        Ok(Some(tokens))
    }

    /// Verifies `token` and returns the USER principal it names.
    ///
    /// # Errors
    /// `Unauthenticated` for every token not accepted (see the module docs).
    pub async fn verify(&self, token: &str) -> Result<Principal> {
        self.check(token).await.map_err(|reason| {
            tracing::debug!(%reason, "platform JWT refused");
            Error::Unauthenticated
        })
    }

    async fn check(&self, token: &str) -> std::result::Result<Principal, String> {
        if token.len() > MAX_JWT_LEN {
            return Err(format!("longer than {MAX_JWT_LEN} bytes"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA) {
            return Err(format!("alg {:?} is not RS256, ES256 or EdDSA", header.alg));
        }
        let kid = header.kid.as_deref();
        let mut keys = self.keys();
        if keys.candidate(header.alg, kid).is_none() {
            self.refresh(true).await;
            keys = self.keys();
        }
        let key = keys
            .candidate(header.alg, kid)
            .ok_or_else(|| format!("no single {:?} key with kid {kid:?}", header.alg))?;
        let data =
            jsonwebtoken::decode::<Value>(token, &key.key, &self.validation(header.alg)).map_err(|e| e.to_string())?;
        self.principal(&data.claims)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut validation = Validation::new(alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.leeway = self.config.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation
    }

    /// The principal `claims` describe.
    fn principal(&self, claims: &Value) -> std::result::Result<Principal, String> {
        let config = &self.config;
        let user_id = claim(claims, &config.user_id_claim)
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty() && id.chars().count() <= MAX_USER_ID_CHARS && !id.chars().any(char::is_control))
            .ok_or_else(|| format!("no usable user ID in claim {:?}", config.user_id_claim))?;
        let org_id = match claim(claims, &config.org_claim) {
            Some(value) => value
                .as_str()
                .and_then(|org| org.parse::<uuid::Uuid>().ok())
                .ok_or_else(|| format!("claim {:?} is not an organization ID", config.org_claim))?,
            None => self.default_org.ok_or_else(|| format!("no claim {:?}", config.org_claim))?,
        };
        let display_name = claim(claims, &config.name_claim)
            .and_then(Value::as_str)
            .map(|name| name.chars().filter(|c| !c.is_control()).take(crate::domain::MAX_DISPLAY_NAME_CHARS))
            .map(String::from_iter)
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| user_id.to_owned());
        let names: Vec<&str> = match claim(claims, &config.permissions_claim) {
            None => Vec::new(),
            Some(Value::String(names)) => names.split_whitespace().collect(),
            Some(Value::Array(names)) => names.iter().filter_map(Value::as_str).collect(),
            Some(_) => return Err(format!("claim {:?} is not a list of names", config.permissions_claim)),
        };
        if names.len() > MAX_PERMISSIONS {
            return Err(format!("more than {MAX_PERMISSIONS} permissions"));
        }
        let mut permissions: Vec<String> = names
            .into_iter()
            .filter(|name| {
                !name.is_empty() && name.len() <= MAX_PERMISSION_CHARS && name.chars().all(|c| c.is_ascii_graphic())
            })
            .map(str::to_owned)
            .collect();
        permissions.sort_unstable();
        permissions.dedup();
        let expire_time = claims
            .get("exp")
            .and_then(Value::as_i64)
            .and_then(|seconds| chrono::DateTime::from_timestamp(seconds, 0))
            .map(crate::pb::timestamp);
        Ok(Principal {
            user_id: user_id.to_owned(),
            org_id: org_id.to_string(),
            display_name,
            permissions,
            principal_type: PrincipalType::User.into(),
            expire_time,
            ..Default::default()
        })
    }

    fn keys(&self) -> Arc<KeySet> {
        self.keys.read().map(|keys| keys.clone()).unwrap_or_default()
    }

    fn install(&self, set: KeySet) {
        tracing::info!(keys = set.0.len(), "platform JWT keys loaded");
        if let Ok(mut keys) = self.keys.write() {
            *keys = Arc::new(set);
        }
    }

    /// Keeps the key set fresh, in the background, so requests never wait for a refresh: looks at
    /// a JWKS file once a second, and at a JWKS URL's schedule every [`MIN_REFETCH_INTERVAL`]
    /// (fetching when `jwks_refresh_secs` have passed, or sooner after a failure). Runs until
    /// dropped. Only a token naming a key not in the set refreshes on the request path.
    pub async fn keep_fresh(self: Arc<Self>) {
        let tick = match self.source {
            Source::File { .. } => FILE_CHECK_INTERVAL,
            Source::Url { .. } => MIN_REFETCH_INTERVAL,
        };
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            self.refresh(false).await;
        }
    }

    /// Loads the key set again if it may have changed: a file whose stamp changed (looked at once a
    /// second), a URL whose refresh interval passed or, with `unknown_key`, whose last fetch is
    /// [`MIN_REFETCH_INTERVAL`] old. One fetch at a time; others go on with the keys in use.
    async fn refresh(&self, unknown_key: bool) {
        match &self.source {
            Source::File { path, seen } => {
                let stamp = {
                    let Ok(mut seen) = seen.lock() else { return };
                    if seen.checked.elapsed() < FILE_CHECK_INTERVAL {
                        return;
                    }
                    seen.checked = Instant::now();
                    let stamp = file_stamp(path);
                    if stamp.is_some() && stamp == seen.stamp {
                        return;
                    }
                    stamp
                };
                match read_file(path) {
                    Ok(set) => {
                        self.install(set);
                        // Only a version that loaded counts as seen: a failed one is read again.
                        if let Ok(mut seen) = seen.lock() {
                            seen.stamp = stamp;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "JWKS file not reloaded; keeping the keys in use");
                    }
                }
            }
            Source::Url { url, client, refresh, fetched } => {
                let Ok(mut fetched) = fetched.try_lock() else { return };
                // Never more than one attempt per MIN_REFETCH_INTERVAL, even while the issuer fails.
                let due = match (fetched.attempt, fetched.success) {
                    (None, _) => true,
                    (Some(attempt), _) if attempt.elapsed() < MIN_REFETCH_INTERVAL => false,
                    (Some(_), _) if unknown_key => true,
                    (Some(_), None) => true,
                    (Some(_), Some(success)) => success.elapsed() >= *refresh,
                };
                if !due {
                    return;
                }
                fetched.attempt = Some(Instant::now());
                match fetch(client, url).await.and_then(|body| KeySet::parse(&body)) {
                    Ok(set) => {
                        fetched.success = fetched.attempt;
                        self.install(set);
                    }
                    Err(error) => {
                        let url = crate::config::redact_url(url);
                        tracing::warn!(%url, %error, "JWKS not fetched; keeping the keys in use");
                    }
                }
            }
        }
    }
}

/// The `name` claim of `claims`: the member of that name, else the path its dots spell through
/// nested objects (`realm_access.roles`); namespaced claims such as `https://example.com/roles`
/// are found by the first rule.
fn claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    claims.get(name).or_else(|| name.split('.').try_fold(claims, |value, part| value.get(part)))
}

fn file_stamp(path: &std::path::Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        inode: meta.ino(),
        changed: (meta.ctime(), meta.ctime_nsec()),
        modified: meta.modified().ok()?,
        len: meta.len(),
    })
}

fn read_file(path: &std::path::Path) -> std::result::Result<KeySet, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.len() > MAX_JWKS_BYTES as u64 {
        return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
    }
    KeySet::parse(&std::fs::read(path).map_err(|e| e.to_string())?)
}

async fn fetch(client: &reqwest::Client, url: &str) -> std::result::Result<Vec<u8>, String> {
    let mut response = client
        .get(url)
        .header(http::header::ACCEPT, "application/jwk-set+json, application/json")
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| e.without_url().to_string())?;
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.without_url().to_string())? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_found_by_name_then_by_path() {
        let claims = serde_json::json!({
            "sub": "u1",
            "https://example.com/roles": ["a"],
            "realm_access": {"roles": ["b", "c"]},
            "a.b": 1,
        });
        assert_eq!(claim(&claims, "sub"), Some(&Value::from("u1")));
        assert_eq!(claim(&claims, "https://example.com/roles"), Some(&serde_json::json!(["a"])));
        assert_eq!(claim(&claims, "realm_access.roles"), Some(&serde_json::json!(["b", "c"])));
        assert_eq!(claim(&claims, "a.b"), Some(&Value::from(1)));
        assert_eq!(claim(&claims, "realm_access.missing"), None);
    }

    #[test]
    fn symmetric_small_and_mismatched_keys_are_never_trusted() {
        let parse = |jwk: Value| {
            KeySet::parse(serde_json::json!({ "keys": [jwk] }).to_string().as_bytes()).map_or(0, |set| set.0.len())
        };
        assert_eq!(parse(serde_json::json!({"kty": "oct", "k": "c2VjcmV0"})), 0);
        // 1024-bit RSA.
        let small = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, [0xC5u8; 128]);
        assert_eq!(parse(serde_json::json!({"kty": "RSA", "n": small, "e": "AQAB"})), 0);
        let big = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, [0xC5u8; 256]);
        assert_eq!(parse(serde_json::json!({"kty": "RSA", "n": big, "e": "AQAB"})), 1);
        // An RSA key that says it is for HS256, or for encryption.
        assert_eq!(parse(serde_json::json!({"kty": "RSA", "n": big, "e": "AQAB", "alg": "HS256"})), 0);
        assert_eq!(parse(serde_json::json!({"kty": "RSA", "n": big, "e": "AQAB", "use": "enc"})), 0);
        // An unknown key type does not spoil the rest of the set.
        let set = serde_json::json!({"keys": [{"kty": "XYZ"}, {"kty": "RSA", "n": big, "e": "AQAB", "kid": "k"}]});
        let set = KeySet::parse(set.to_string().as_bytes()).unwrap();
        assert!(set.candidate(Algorithm::RS256, Some("k")).is_some());
        assert!(set.candidate(Algorithm::RS256, None).is_some(), "the only RSA key");
        assert!(set.candidate(Algorithm::RS256, Some("other")).is_none());
        assert!(set.candidate(Algorithm::ES256, None).is_none());
        // Two keys of one algorithm: a token must say which.
        let two = serde_json::json!({"keys": [{"kty": "RSA", "n": big, "e": "AQAB", "kid": "a"}, {"kty": "RSA", "n": big, "e": "AQAB", "kid": "b"}]});
        let two = KeySet::parse(two.to_string().as_bytes()).unwrap();
        assert!(two.candidate(Algorithm::RS256, None).is_none());
        assert!(two.candidate(Algorithm::RS256, Some("b")).is_some());
        // Key material a verifier could choke on: short Ed25519 and P-256 keys, an even exponent,
        // an oversized modulus.
        let short = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, [7u8; 16]);
        assert_eq!(parse(serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": short})), 0);
        assert_eq!(parse(serde_json::json!({"kty": "EC", "crv": "P-256", "x": short, "y": short})), 0);
        assert_eq!(parse(serde_json::json!({"kty": "RSA", "n": big, "e": "Ag"})), 0);
        let huge = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, [0xC5u8; 1025]);
        assert_eq!(parse(serde_json::json!({"kty": "RSA", "n": huge, "e": "AQAB"})), 0);
        // A set with no usable key is a failed load, not an empty set.
        assert!(KeySet::parse(br#"{"keys": []}"#).is_err());
    }
}
