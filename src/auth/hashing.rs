//! argon2id hashing of secrets, off the async runtime, in two lanes so public verification can never
//! starve the admin operations that issue secrets: each lane has its own concurrency limit and a
//! bounded wait queue, and a full queue answers RESOURCE_EXHAUSTED at once instead of waiting without
//! end. Hashes made with other parameters than the configured ones still verify, and say so
//! ([`Hasher::is_current`]) so the caller can rehash them.

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

use argon2::{Algorithm, Argon2, Params, PasswordHasher, PasswordVerifier, Version, password_hash::phc::PasswordHash};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// argon2 cost parameters and the admission limits of the two lanes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashingConfig {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Lanes of one computation (argon2's `p`).
    pub parallelism: u32,
    /// Verifications computed at once (the public lane; default: half the cores, at least 1, the rest
    /// left to the cache hits that are most of the traffic).
    pub max_concurrent: usize,
    /// Verifications allowed to wait for a slot when all are busy; beyond that RESOURCE_EXHAUSTED. 0
    /// means no waiting.
    pub max_waiting: usize,
    /// Hashes of new secrets (create, regenerate) computed at once, apart from verification.
    pub admin_concurrent: usize,
}

/// The defaults, chosen for 256-bit random secrets rather than human passwords: NIST SP 800-63B asks
/// for a salted, costly KDF only for secrets under 112 bits; above that an approved one-way function
/// suffices, and argon2id here is defence in depth for a stolen database. 1 MiB and one pass cost
/// about a millisecond, so a verification miss is cheap for legitimate callers and a flood of them is
/// bounded by the lanes rather than by memory.
impl Default for HashingConfig {
    fn default() -> Self {
        Self {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
            max_concurrent: std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            max_waiting: 64,
            admin_concurrent: 1,
        }
    }
}

/// One lane: its slots and its bounded queue.
#[derive(Debug)]
struct Lane {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl Lane {
    fn new(concurrent: usize, max_waiting: usize) -> Self {
        Self { slots: Arc::new(Semaphore::new(concurrent.max(1))), waiting: AtomicUsize::new(0), max_waiting }
    }
}

/// Hashes and verifies secrets; see the module docs.
#[derive(Debug)]
pub struct Hasher {
    argon2: Argon2<'static>,
    verify: Lane,
    issue: Lane,
    computed: AtomicU64,
    waits: AtomicU64,
    wait_nanos: AtomicU64,
}

impl Hasher {
    /// A hasher with `config`.
    ///
    /// # Errors
    /// A message if the argon2 parameters are invalid.
    pub fn new(config: &HashingConfig) -> Result<Self, String> {
        let params = Params::new(config.memory_kib, config.iterations, config.parallelism, None)
            .map_err(|e| format!("invalid argon2 parameters: {e}"))?;
        Ok(Self {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            verify: Lane::new(config.max_concurrent, config.max_waiting),
            issue: Lane::new(config.admin_concurrent, config.max_waiting),
            computed: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            wait_nanos: AtomicU64::new(0),
        })
    }

    /// argon2 computations started since startup (hashes and verifications).
    pub fn computed(&self) -> u64 {
        self.computed.load(Ordering::Relaxed)
    }

    /// Requests waiting for a hashing slot right now, in both lanes.
    pub fn waiting(&self) -> usize {
        self.verify.waiting.load(Ordering::Relaxed) + self.issue.waiting.load(Ordering::Relaxed)
    }

    /// Computations that were admitted and got a slot since startup (each waited, maybe for no time).
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// Total time admitted computations spent waiting for a slot since startup.
    pub fn wait_time(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.wait_nanos.load(Ordering::Relaxed))
    }

    async fn run<T: Send + 'static>(
        &self,
        lane: &Lane,
        job: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T> {
        // A free slot is taken at once; only when every slot is busy does the request queue, and
        // only while the queue has room (a queue of 0 means: never wait).
        let permit = match lane.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                self.waits.fetch_add(1, Ordering::Relaxed);
                permit
            }
            Err(_) => self.wait_for_slot(lane).await?,
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

    /// Waits in `lane`'s bounded queue for one of its slots.
    async fn wait_for_slot(&self, lane: &Lane) -> Result<OwnedSemaphorePermit> {
        let previously_waiting = lane.waiting.fetch_add(1, Ordering::AcqRel);
        // Decrements on every exit, including when the caller's future is dropped while it waits
        // (client cancellation or deadline): a leaked count would shed every later request.
        let waiting = WaitingGuard(&lane.waiting);
        if previously_waiting >= lane.max_waiting {
            return Err(Error::HashingBusy);
        }
        let started = std::time::Instant::now();
        let permit = lane.slots.clone().acquire_owned().await;
        drop(waiting);
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.wait_nanos.fetch_add(waited, Ordering::Relaxed);
        self.waits.fetch_add(1, Ordering::Relaxed);
        permit.map_err(|_| Error::internal("hashing semaphore closed"))
    }

    /// The argon2id PHC string of a new `secret`, with a fresh random salt, in the admin lane.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED when the admin lane's queue is full; INTERNAL if argon2 fails.
    pub async fn hash(&self, secret: &Secret) -> Result<SecretHash> {
        self.hash_in(&self.issue, secret).await
    }

    /// Like [`Hasher::hash`], in the verification lane: for rehashing a secret that just verified.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED when the verification lane's queue is full; INTERNAL if argon2 fails.
    pub async fn rehash(&self, secret: &Secret) -> Result<SecretHash> {
        self.hash_in(&self.verify, secret).await
    }

    async fn hash_in(&self, lane: &Lane, secret: &Secret) -> Result<SecretHash> {
        let secret = secret.clone();
        self.run(lane, move |argon2| argon2.hash_password(secret.expose_bytes()).map(|h| SecretHash(h.to_string())))
            .await?
            .map_err(|e| Error::internal(format!("argon2: {e}")))
    }

    /// Whether `secret` matches `hash` (made with any argon2 parameters), in the verification lane.
    /// argon2's comparison is constant-time.
    ///
    /// # Errors
    /// RESOURCE_EXHAUSTED when the verification lane's queue is full.
    pub async fn verify(&self, secret: &Secret, hash: &SecretHash) -> Result<bool> {
        let (secret, hash) = (secret.clone(), hash.0.clone());
        self.run(&self.verify, move |argon2| argon2.verify_password(secret.expose_bytes(), hash.as_str()).is_ok()).await
    }

    /// Whether `hash` was made with the configured parameters (else it should be rehashed once its
    /// secret verifies).
    pub fn is_current(&self, hash: &SecretHash) -> bool {
        let ours = self.argon2.params();
        PasswordHash::new(&hash.0)
            .ok()
            .and_then(|parsed| Params::try_from(&parsed).ok())
            .is_some_and(|p| (p.m_cost(), p.t_cost(), p.p_cost()) == (ours.m_cost(), ours.t_cost(), ours.p_cost()))
    }
}
