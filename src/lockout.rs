//! Failed-attempt lockout: failures are counted in memory and written in batches
//! ([`FailureLog::flush`], about once a second), never one database write per failed request; a key
//! whose consecutive failures reach its org's threshold is locked in the same batch, and its cached
//! verifications are dropped. A success after failures restarts the count. What is pending is written
//! on graceful shutdown; a crash loses at most one interval.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use chrono::{DateTime, Utc};

use crate::{
    auth::cache::VerifiedCache,
    domain::KeyId,
    error::Result,
    store::{Outcomes, Store},
};

#[derive(Debug, Default)]
struct Pending {
    reset: bool,
    failures: u64,
    last_failure: Option<DateTime<Utc>>,
}

/// Authentication outcomes waiting to be written; see the module docs.
#[derive(Debug, Default)]
pub struct FailureLog {
    pending: Mutex<HashMap<KeyId, Pending>>,
}

impl FailureLog {
    fn lock(&self) -> MutexGuard<'_, HashMap<KeyId, Pending>> {
        // Every update is a single-entry change, so a poisoned lock is safe to keep using.
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a failed verification of `id` (a wrong secret).
    pub fn failed(&self, id: KeyId) {
        let mut pending = self.lock();
        let entry = pending.entry(id).or_default();
        entry.failures += 1;
        entry.last_failure = Some(Utc::now());
    }

    /// Records a successful verification of `id`, which restarts its count of consecutive failures.
    /// `stored_failures` is the count the database holds: with none stored or pending, there is
    /// nothing to write.
    pub fn succeeded(&self, id: KeyId, stored_failures: i64) {
        let mut pending = self.lock();
        if stored_failures == 0 && !pending.contains_key(&id) {
            return;
        }
        let entry = pending.entry(id).or_default();
        entry.reset = true;
        entry.failures = 0;
    }

    /// Forgets what is pending for `id` (it was unlocked or given a new secret).
    pub fn forget(&self, id: KeyId) {
        self.lock().remove(&id);
    }

    /// Writes what is pending in one transaction and drops the cached verifications of the keys it
    /// locked. On failure the outcomes are kept for the next attempt. Returns the keys it locked.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn flush(&self, store: &Store, cache: &VerifiedCache) -> Result<Vec<KeyId>> {
        let batch: Vec<Outcomes> = self
            .lock()
            .drain()
            .map(|(key_id, p)| Outcomes { key_id, reset: p.reset, failures: p.failures, last_failure: p.last_failure })
            .collect();
        match store.record_outcomes(&batch).await {
            Ok(locked) => {
                for id in &locked {
                    cache.invalidate(id.0);
                    tracing::warn!(key_id = %id, "API key locked after too many failed authentications");
                }
                Ok(locked)
            }
            Err(error) => {
                let mut pending = self.lock();
                for outcome in batch {
                    // Newer outcomes came in meanwhile: a reset among them wins; failures add up.
                    let entry = pending.entry(outcome.key_id).or_default();
                    if !entry.reset {
                        entry.reset = outcome.reset;
                        entry.failures += outcome.failures;
                        entry.last_failure = entry.last_failure.or(outcome.last_failure);
                    }
                }
                Err(error)
            }
        }
    }
}
