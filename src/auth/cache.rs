//! The cache of successful verifications, shared by the in-process authenticator (so Authenticate does
//! not pay argon2 on every call) and the remote one (so a consumer does not call apikeys on every
//! request).
//!
//! Entries are keyed by HMAC-SHA256(process-random key, key id ‖ secret): never by the key id alone
//! (that would reveal which ids are hot) and never by the secret. Only successes are cached. Each entry
//! expires after the TTL; `invalidate(key_id)` (or [`VerifiedCache::invalidate_digest`], with the
//! key's [`key_digest`] as the change stream carries it) drops a key's entries at once, and an
//! invalidation epoch stops a verification that started before an invalidation from re-inserting a
//! stale result. A cache can also refuse to re-cache a just-invalidated key for a while (its
//! quarantine: a consumer may hear of a change before every apikeys replica has), and can be told to
//! trust its entries for less than the TTL while the news of changes may not reach it
//! ([`VerifiedCache::set_trust_limit`]).

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use hmac::{Mac, digest::KeyInit};
use sha2::Sha256;
use uuid::Uuid;
use zeroize::Zeroize as _;

use super::{credential::Credential, flight::SingleFlight};
use crate::{error::Result, pb::Principal, striped::StripedCounter};

/// A verified principal and the encoding of the `AuthenticateResponse` that carries it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The principal (shared with the cache: not copied per call).
    pub principal: Arc<Principal>,
    /// `AuthenticateResponse { principal }`, encoded (made once per cache entry).
    pub encoded: bytes::Bytes,
}

/// The encoding of `AuthenticateResponse { principal }`: its one field, the principal.
fn encode_answer(principal: &Principal) -> bytes::Bytes {
    let mut buf = Vec::with_capacity(prost::encoding::message::encoded_len(1, principal));
    prost::encoding::message::encode(1, principal, &mut buf);
    buf.into()
}

/// What one verification yields: the cache epoch it started in, and the answer.
pub type Verified = (Epoch, Result<Arc<Principal>>);

type HmacSha256 = hmac::Hmac<Sha256>;

/// The cache key of one credential: a keyed hash, safe to hold in memory.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CacheKey([u8; 32]);

impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // An HMAC under a key of this process: any 8 of its bytes are as good as all 32 (a
        // client cannot aim keys at one bucket), and hashing a quarter of them is cheaper.
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_ne_bytes(head));
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheKey(..)")
    }
}

/// An invalidation generation, taken before a verification starts; see [`VerifiedCache::insert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Epoch(u64);

struct Entry {
    principal: Arc<Principal>,
    /// The principal's `AuthenticateResponse` encoding, made at the first [`VerifiedCache::answer`]
    /// (never, in a consumer's cache).
    encoded: Option<bytes::Bytes>,
    digest: KeyDigest,
    inserted_at: Instant,
    expires_at: Instant,
}

struct Inner {
    entries: HashMap<CacheKey, Entry>,
    epoch: u64,
    /// Keys invalidated lately, until when their results are not cached.
    quarantined: HashMap<KeyDigest, Instant>,
    /// After a clear, until when no result is cached.
    quarantined_all: Option<Instant>,
    /// While set, entries older than this are not trusted whatever their TTL.
    trust_limit: Option<Duration>,
}

/// A key's digest, as the change stream names it: SHA-256 of a fixed label and the key ID. Only a
/// holder of the key ID can tell which key a digest names.
pub type KeyDigest = [u8; 32];

/// The digest of key `key_id`; see [`KeyDigest`].
pub fn key_digest(key_id: Uuid) -> KeyDigest {
    use sha2::Digest as _;
    Sha256::new().chain_update(b"apikeys.v1.key-change\0").chain_update(key_id.as_bytes()).finalize().into()
}

/// How long until `expire_time` (a principal's), by the wall clock; `None` if it has passed.
fn key_lifetime_left(expire_time: &prost_types::Timestamp) -> Option<Duration> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?;
    let at = Duration::new(u64::try_from(expire_time.seconds).ok()?, u32::try_from(expire_time.nanos).unwrap_or(0));
    at.checked_sub(now).filter(|left| !left.is_zero())
}

/// The longest TTL a cache accepts (a day): a longer one makes revocation meaningless.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Why a cache could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The OS random source failed (for the HMAC key).
    #[error("OS random source failed: {0}")]
    Random(#[from] getrandom::Error),
    /// The TTL is longer than [`MAX_TTL`].
    #[error("cache TTL of {}s is longer than the longest allowed, {}s (a day)", .0.as_secs(), MAX_TTL.as_secs())]
    TtlTooLong(Duration),
}

/// Bounded, TTL-limited cache of verified credentials.
pub struct VerifiedCache {
    /// HMAC-SHA256 already keyed with the process-random key: cloning it per lookup saves hashing
    /// the key's inner and outer pads every time.
    mac: HmacSha256,
    ttl: Duration,
    capacity: usize,
    quarantine: Duration,
    inner: Mutex<Inner>,
    /// Striped: every Authenticate counts one ([`crate::striped`]).
    hits: StripedCounter,
    misses: StripedCounter,
}

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCache").field("ttl", &self.ttl).field("capacity", &self.capacity).finish()
    }
}

impl VerifiedCache {
    /// A cache holding at most `capacity` entries for at most `ttl` each. A zero TTL or capacity
    /// disables caching.
    ///
    /// # Errors
    /// A TTL longer than [`MAX_TTL`], or a failing OS random source (startup).
    pub fn new(ttl: Duration, capacity: usize) -> Result<Self, CacheError> {
        if ttl > MAX_TTL {
            return Err(CacheError::TtlTooLong(ttl));
        }
        let mut mac_key = [0u8; 32];
        getrandom::fill(&mut mac_key)?;
        let mac = <HmacSha256 as KeyInit>::new_from_slice(&mac_key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac_key.zeroize();
        Ok(Self {
            mac,
            ttl,
            capacity,
            quarantine: Duration::ZERO,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                epoch: 0,
                quarantined: HashMap::new(),
                quarantined_all: None,
                trust_limit: None,
            }),
            hits: StripedCounter::default(),
            misses: StripedCounter::default(),
        })
    }

    /// The same cache, refusing for `quarantine` after an invalidation to cache results of the key
    /// invalidated.
    #[must_use]
    pub fn with_quarantine(mut self, quarantine: Duration) -> Self {
        self.quarantine = quarantine;
        self
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map inconsistent (every update is a single
        // insert or remove), so a poisoned lock is safe to keep using.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cache key of a credential.
    pub fn key(&self, credential: &Credential) -> CacheKey {
        let mut mac = self.mac.clone();
        mac.update(credential.key_id.as_bytes());
        mac.update(credential.secret.expose_bytes());
        CacheKey(mac.finalize().into_bytes().into())
    }

    /// The cached principal for `key`, if present and not expired.
    pub fn get(&self, key: &CacheKey) -> Option<Arc<Principal>> {
        self.lookup(key, |entry| entry.principal.clone())
    }

    /// The cached principal for `key` with its `AuthenticateResponse` encoding, if present and not
    /// expired.
    pub fn answer(&self, key: &CacheKey) -> Option<Answer> {
        self.lookup(key, |entry| {
            let encoded = entry.encoded.get_or_insert_with(|| encode_answer(&entry.principal)).clone();
            Answer { principal: entry.principal.clone(), encoded }
        })
    }

    /// `found` of the live entry of `key`; an expired one is dropped. Counts the hit or miss.
    fn lookup<T>(&self, key: &CacheKey, found: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        let now = Instant::now();
        let mut inner = self.lock();
        let trusted_since = inner.trust_limit.and_then(|limit| now.checked_sub(limit));
        let found = match inner.entries.get_mut(key) {
            Some(entry) if entry.expires_at > now && trusted_since.is_none_or(|t| entry.inserted_at > t) => {
                Some(found(entry))
            }
            Some(_) => {
                inner.entries.remove(key);
                None
            }
            None => None,
        };
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.inc();
        found
    }

    /// Lookups that found a live entry, since startup.
    pub fn hits(&self) -> u64 {
        self.hits.get()
    }

    /// Lookups that found nothing (or an expired entry), since startup.
    pub fn misses(&self) -> u64 {
        self.misses.get()
    }

    /// The current invalidation epoch; take it before starting a verification.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.lock().epoch)
    }

    /// Caches a successful verification, unless an invalidation happened since `epoch` was taken (the
    /// verification may then have read a key that has since changed or gone).
    pub fn insert(&self, key: CacheKey, principal: Arc<Principal>, key_id: Uuid, epoch: Epoch) {
        if self.ttl.is_zero() || self.capacity == 0 {
            return;
        }
        let digest = key_digest(key_id);
        let now = Instant::now();
        let mut inner = self.lock();
        let quarantined = inner.quarantined_all.is_some_and(|until| until > now)
            || inner.quarantined.get(&digest).is_some_and(|until| *until > now);
        if inner.epoch != epoch.0 || quarantined {
            return;
        }
        if inner.entries.len() >= self.capacity && !inner.entries.contains_key(&key) {
            inner.entries.retain(|_, entry| entry.expires_at > now);
            if inner.entries.len() >= self.capacity {
                // Still full of live entries: drop about a tenth, in the map's (random) order.
                let evict: Vec<CacheKey> = inner.entries.keys().take(self.capacity.div_ceil(10)).copied().collect();
                for k in evict {
                    inner.entries.remove(&k);
                }
            }
        }
        // `new` bounds the TTL, so this cannot overflow; if it could, not caching is the safe answer.
        let Some(mut expires_at) = now.checked_add(self.ttl) else { return };
        // Never past the key's own expiry.
        if let Some(at) = &principal.expire_time {
            match key_lifetime_left(at).and_then(|left| now.checked_add(left)) {
                Some(key_expires) => expires_at = expires_at.min(key_expires),
                None => return,
            }
        }
        inner.entries.insert(key, Entry { principal, encoded: None, digest, inserted_at: now, expires_at });
    }

    /// Drops every entry of `key_id` and moves to a new epoch. Called after the key is updated,
    /// regenerated or deleted.
    pub fn invalidate(&self, key_id: Uuid) {
        self.invalidate_digest(&key_digest(key_id));
    }

    /// Drops every entry of the key with digest `digest` and moves to a new epoch; with a
    /// quarantine, results of that key are not cached for that long.
    pub fn invalidate_digest(&self, digest: &KeyDigest) {
        self.invalidate_digests(std::slice::from_ref(digest));
    }

    /// [`VerifiedCache::invalidate_digest`] for many keys at once: one pass over the entries.
    pub fn invalidate_digests(&self, digests: &[KeyDigest]) {
        if digests.is_empty() {
            return;
        }
        let gone: std::collections::HashSet<&KeyDigest> = digests.iter().collect();
        let now = Instant::now();
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.entries.retain(|_, entry| !gone.contains(&entry.digest));
        if !self.quarantine.is_zero() {
            inner.quarantined.retain(|_, until| *until > now);
            if let Some(until) = now.checked_add(self.quarantine) {
                inner.quarantined.extend(digests.iter().map(|d| (*d, until)));
            }
        }
    }

    /// Drops every entry and moves to a new epoch (when changes may have been missed); with a
    /// quarantine, nothing is cached for that long.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.entries.clear();
        if !self.quarantine.is_zero() {
            inner.quarantined_all = Instant::now().checked_add(self.quarantine);
        }
    }

    /// While `limit` is set, entries older than it are dropped when looked up, whatever their TTL
    /// (news of changes may not be arriving); `None` restores the TTL alone.
    pub fn set_trust_limit(&self, limit: Option<Duration>) {
        self.lock().trust_limit = limit;
    }

    /// The principal of `credential`: from the cache, else from `verify`, which runs once for every
    /// caller presenting the same credential at the same time (`flights`). A success is cached unless
    /// an invalidation happened after the verification started (the flight's own epoch, not a
    /// joiner's later one).
    ///
    /// # Errors
    /// What `verify` returns.
    pub async fn get_or_verify<F: Future<Output = Result<Arc<Principal>>>>(
        &self,
        flights: &SingleFlight<CacheKey, Verified>,
        credential: &Credential,
        verify: impl FnOnce() -> F,
    ) -> Result<Principal> {
        let key = self.key(credential);
        if let Some(principal) = self.get(&key) {
            return Ok((*principal).clone());
        }
        let principal = self.verify_and_keep(key, flights, credential, verify).await?;
        Ok((*principal).clone())
    }

    /// [`VerifiedCache::get_or_verify`] answering with the principal and its `AuthenticateResponse`
    /// encoding: for a cached credential, neither a copy of the principal nor an encoding per call.
    ///
    /// # Errors
    /// What `verify` returns.
    pub async fn get_or_verify_answer<F: Future<Output = Result<Arc<Principal>>>>(
        &self,
        flights: &SingleFlight<CacheKey, Verified>,
        credential: &Credential,
        verify: impl FnOnce() -> F,
    ) -> Result<Answer> {
        let key = self.key(credential);
        if let Some(answer) = self.answer(&key) {
            return Ok(answer);
        }
        let principal = self.verify_and_keep(key, flights, credential, verify).await?;
        Ok(Answer { encoded: encode_answer(&principal), principal })
    }

    /// Verifies `credential` (one verification for concurrent callers of the same `key`) and
    /// caches a success.
    async fn verify_and_keep<F: Future<Output = Result<Arc<Principal>>>>(
        &self,
        key: CacheKey,
        flights: &SingleFlight<CacheKey, Verified>,
        credential: &Credential,
        verify: impl FnOnce() -> F,
    ) -> Result<Arc<Principal>> {
        let run = || async {
            let epoch = self.epoch();
            (epoch, verify().await)
        };
        let settle = |(epoch, result): &Verified| {
            if let Ok(principal) = result {
                self.insert(key, principal.clone(), credential.key_id, *epoch);
            }
        };
        // Boxed: a verification's future (database reads, hashing, an upstream call) is kilobytes,
        // and unboxed it would make every caller's future that size, hits included, copied on
        // every call.
        let (_, result) = Box::pin(flights.run(key, run, settle)).await;
        result
    }

    /// Number of entries, expired ones included.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the cache holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configured TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::credential::Secret;

    fn credential() -> Credential {
        Credential { key_id: Uuid::new_v4(), secret: Secret::generate().unwrap() }
    }

    fn principal(cred: &Credential) -> Arc<Principal> {
        Arc::new(Principal { key_id: cred.key_id.to_string(), ..Default::default() })
    }

    #[test]
    fn an_answer_is_the_encoding_of_its_authenticate_response_and_goes_with_its_entry() {
        use prost::Message as _;
        let cache = VerifiedCache::new(Duration::from_secs(60), 10).unwrap();
        let cred = credential();
        let full = Principal {
            key_id: cred.key_id.to_string(),
            org_id: "org".into(),
            display_name: "Ünïcode name".into(),
            permissions: vec!["read_data".into(), "edit_data".into()],
            restrictions: Some(crate::pb::PrincipalRestrictions {
                unowned_incident_group: "group".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let key = cache.key(&cred);
        assert!(cache.answer(&key).is_none(), "nothing cached yet");
        cache.insert(key, Arc::new(full.clone()), cred.key_id, cache.epoch());
        let answer = cache.answer(&key).expect("cached");
        let expected = crate::pb::AuthenticateResponse { principal: Some(full.clone()) }.encode_to_vec();
        assert_eq!(answer.encoded.as_ref(), expected.as_slice());
        assert_eq!(*answer.principal, full);
        assert_eq!(cache.answer(&key).unwrap().encoded, answer.encoded, "made once, then the same bytes");

        // A change of the key drops the entry with its encoding; the next one is of the new principal.
        cache.invalidate(cred.key_id);
        assert!(cache.answer(&key).is_none());
        let renamed = Principal { display_name: "renamed".into(), ..full };
        cache.insert(key, Arc::new(renamed.clone()), cred.key_id, cache.epoch());
        let expected = crate::pb::AuthenticateResponse { principal: Some(renamed) }.encode_to_vec();
        assert_eq!(cache.answer(&key).unwrap().encoded.as_ref(), expected.as_slice());
    }

    #[test]
    fn keys_depend_on_id_secret_and_process_key() {
        let cache = VerifiedCache::new(Duration::from_secs(60), 10).unwrap();
        let other = VerifiedCache::new(Duration::from_secs(60), 10).unwrap();
        let a = credential();
        let mut b = a.clone();
        b.secret = Secret::generate().unwrap();
        assert!(cache.key(&a) == cache.key(&a));
        assert!(cache.key(&a) != cache.key(&b));
        assert!(cache.key(&a) != other.key(&a));
    }

    #[test]
    fn hit_expiry_invalidation_and_epoch() {
        let cache = VerifiedCache::new(Duration::from_millis(50), 10).unwrap();
        let cred = credential();
        let key = cache.key(&cred);
        cache.insert(key, principal(&cred), cred.key_id, cache.epoch());
        assert!(cache.get(&key).is_some());
        cache.invalidate(cred.key_id);
        assert!(cache.get(&key).is_none());

        let stale_epoch = cache.epoch();
        cache.invalidate(Uuid::new_v4());
        cache.insert(key, principal(&cred), cred.key_id, stale_epoch);
        assert!(cache.get(&key).is_none(), "insert after an invalidation must be refused");

        cache.insert(key, principal(&cred), cred.key_id, cache.epoch());
        std::thread::sleep(Duration::from_millis(60));
        assert!(cache.get(&key).is_none(), "expired");
    }

    #[test]
    fn digests_clear_quarantine_and_trust_limit() {
        let cache = VerifiedCache::new(Duration::from_secs(60), 10).unwrap().with_quarantine(Duration::from_millis(50));
        let (a, b) = (credential(), credential());
        let (ka, kb) = (cache.key(&a), cache.key(&b));
        cache.insert(ka, principal(&a), a.key_id, cache.epoch());
        cache.insert(kb, principal(&b), b.key_id, cache.epoch());
        assert_ne!(key_digest(a.key_id), key_digest(b.key_id));

        // A digest drops that key only, and its results are not cached during the quarantine.
        cache.invalidate_digest(&key_digest(a.key_id));
        assert!(cache.get(&ka).is_none() && cache.get(&kb).is_some());
        cache.insert(ka, principal(&a), a.key_id, cache.epoch());
        assert!(cache.get(&ka).is_none(), "cached during the quarantine");
        std::thread::sleep(Duration::from_millis(60));
        cache.insert(ka, principal(&a), a.key_id, cache.epoch());
        assert!(cache.get(&ka).is_some(), "cached after the quarantine");

        // A trust limit drops older entries when they are looked up; fresh ones are used.
        std::thread::sleep(Duration::from_millis(30));
        cache.set_trust_limit(Some(Duration::from_millis(20)));
        assert!(cache.get(&ka).is_none() && cache.get(&kb).is_none());
        cache.insert(ka, principal(&a), a.key_id, cache.epoch());
        assert!(cache.get(&ka).is_some(), "a fresh entry is trusted");
        cache.set_trust_limit(None);
        assert!(cache.get(&kb).is_none(), "an untrusted entry was dropped, not kept for later");

        // Clear drops everything, refuses results of verifications that started before it, and
        // caches nothing during the quarantine.
        let before = cache.epoch();
        cache.clear();
        assert!(cache.is_empty());
        cache.insert(kb, principal(&b), b.key_id, before);
        assert!(cache.get(&kb).is_none());
        cache.insert(kb, principal(&b), b.key_id, cache.epoch());
        assert!(cache.get(&kb).is_none(), "cached during the quarantine after a clear");
        std::thread::sleep(Duration::from_millis(60));
        cache.insert(kb, principal(&b), b.key_id, cache.epoch());
        assert!(cache.get(&kb).is_some());

        // Many at once: one pass, the others stay.
        cache.insert(ka, principal(&a), a.key_id, cache.epoch());
        cache.invalidate_digests(&[key_digest(a.key_id), key_digest(Uuid::new_v4())]);
        assert!(cache.get(&ka).is_none() && cache.get(&kb).is_some());
    }

    #[test]
    fn ttls_beyond_a_day_are_refused() {
        assert!(VerifiedCache::new(MAX_TTL, 1).is_ok());
        let error = VerifiedCache::new(Duration::from_secs(u64::MAX), 1).unwrap_err();
        assert!(error.to_string().contains("longer than"), "{error}");
    }

    #[test]
    fn stays_within_capacity() {
        let cache = VerifiedCache::new(Duration::from_secs(60), 100).unwrap();
        for _ in 0..1000 {
            let cred = credential();
            cache.insert(cache.key(&cred), principal(&cred), cred.key_id, cache.epoch());
            assert!(cache.len() <= 100);
        }
    }
}
