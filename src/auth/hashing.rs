//! argon2id hashing of secrets, off the async runtime and behind a concurrency limit with a bounded
//! wait queue: when the queue is full the caller gets RESOURCE_EXHAUSTED at once instead of waiting
//! without end. Unknown key IDs are verified against a dummy hash so timing does not tell them apart.

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::Semaphore;

use super::Secret;
use crate::error::{Error, Result};

/// An argon2id PHC string: what is stored instead of a secret. Its `Debug` leaves the hash out.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash(pub String);

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

/// Counts one waiter for as long as it lives.
struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// argon2 cost parameters and the admission limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashingConfig {
    /// Memory cost in KiB (default 19456).
    pub memory_kib: u32,
    /// Iterations (default 2).
    pub iterations: u32,
    /// Lanes (default 1).
    pub parallelism: u32,
    /// Hashes computed at once (default: the number of cores).
    pub max_concurrent: usize,
    /// Requests allowed to wait for a slot when all are busy; beyond that RESOURCE_EXHAUSTED. 0 means
    /// no waiting: a request that finds every slot busy is refused at once (default 64).
    pub max_waiting: usize,
}

impl Default for HashingConfig {
    fn default() -> Self {
        Self {
            memory_kib: Params::DEFAULT_M_COST,
            iterations: Params::DEFAULT_T_COST,
            parallelism: Params::DEFAULT_P_COST,
            max_concurrent: std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            max_waiting: 64,
        }
    }
}

/// Hashes and verifies secrets; see the module docs.
pub struct Hasher {
    argon2: Argon2<'static>,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
    dummy_hash: String,
    computed: AtomicU64,
    waits: AtomicU64,
    wait_nanos: AtomicU64,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").field("waiting", &self.waiting).field("max_waiting", &self.max_waiting).finish()
    }
}

impl Hasher {
    /// A hasher with `config`; computes the dummy hash (startup work).
    ///
    /// # Errors
    /// A message if the argon2 parameters are invalid.
    pub fn new(config: &HashingConfig) -> Result<Self, String> {
        let params = Params::new(config.memory_kib, config.iterations, config.parallelism, None)
            .map_err(|e| format!("invalid argon2 parameters: {e}"))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let dummy_secret = Secret::generate().map_err(|e| format!("OS random source failed: {e}"))?;
        let dummy_hash =
            argon2.hash_password(dummy_secret.expose_bytes()).map_err(|e| format!("argon2 failed: {e}"))?.to_string();
        Ok(Self {
            argon2,
            slots: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting: config.max_waiting,
            dummy_hash,
            computed: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            wait_nanos: AtomicU64::new(0),
        })
    }

    /// argon2 computations started since startup (hashes and verifications).
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    /// Requests waiting for a hashing slot right now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Computations that were admitted and got a slot since startup (each waited, maybe for no time).
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Total time admitted computations spent waiting for a slot since startup.
    pub fn wait_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.wait_nanos.load(Ordering::Relaxed))
    }

    async fn run<T: Send + 'static>(&self, job: impl FnOnce(&Argon2<'static>) -> T + Send + 'static) -> Result<T> {
        // A free slot is taken at once; only when every slot is busy does the request queue, and
        // only while the queue has room (a queue of 0 means: never wait).
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                self.waits.fetch_add(1, Ordering::Relaxed);
                permit
            }
            Err(_) => self.wait_for_slot().await?,
        };
        let argon2 = self.argon2.clone();
        self.computed.fetch_add(1, Ordering::Relaxed);
        tokio::task::spawn_blocking(move || {
            let result = job(&argon2);
            drop(permit);
            result
        })
        .await
        .map_err(|e| Error::internal(format!("hashing task failed: {e}")))
    }

    /// Waits in the bounded queue for a hashing slot.
    async fn wait_for_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        let previously_waiting = self.waiting.fetch_add(1, Ordering::AcqRel);
        // Decrements on every exit, including when the caller's future is dropped while it waits
        // (client cancellation or deadline): a leaked count would shed every later request.
        let waiting = WaitingGuard(&self.waiting);
        if previously_waiting >= self.max_waiting {
            return Err(Error::HashingBusy);
        }
        let started = std::time::Instant::now();
        let permit = self.slots.clone().acquire_owned().await;
        drop(waiting);
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.wait_nanos.fetch_add(waited, Ordering::Relaxed);
        self.waits.fetch_add(1, Ordering::Relaxed);
        permit.map_err(|_| Error::internal("hashing semaphore closed"))
    }

    /// The argon2id PHC string of `secret`, with a fresh random salt.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED when the queue is full; INTERNAL if argon2 fails.
    pub async fn hash(&self, secret: &Secret) -> Result<SecretHash> {
        let secret = secret.clone();
        self.run(move |argon2| argon2.hash_password(secret.expose_bytes()).map(|h| SecretHash(h.to_string())))
            .await?
            .map_err(|e| Error::internal(format!("argon2: {e}")))
    }

    /// Whether `secret` matches `hash`; with `None` (unknown key) it verifies against the dummy hash
    /// and answers false, taking the same time. argon2's comparison is constant-time.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED when the queue is full.
    pub async fn verify(&self, secret: &Secret, hash: Option<SecretHash>) -> Result<bool> {
        let secret = secret.clone();
        let known = hash.is_some();
        let hash = hash.map_or_else(|| self.dummy_hash.clone(), |h| h.0);
        let matched =
            self.run(move |argon2| argon2.verify_password(secret.expose_bytes(), hash.as_str()).is_ok()).await?;
        Ok(known && matched)
    }
}
