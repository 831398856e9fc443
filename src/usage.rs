//! When, from where and by what each key was last used, without a database write per request:
//! every successful authentication (cache hits included) updates an entry in memory, and a
//! flusher writes what changed every `usage_flush_ms` (a minute by default), all keys in one
//! statement per 500, and on graceful shutdown. A crash loses at most one interval. The database
//! keeps the latest time any replica saw: an older report never overwrites a newer one.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{error::Result, store::Store};

/// The longest user agent kept, in bytes (cut at a character boundary).
pub const MAX_AGENT_BYTES: usize = 200;

/// One key's latest use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// When.
    pub time: DateTime<Utc>,
    /// The client address, if known.
    pub address: Option<IpAddr>,
    /// The caller's user agent (for Authenticate: the consumer service's), printable, cut short.
    pub agent: String,
    /// The permissions requests required of the key, each with when last.
    pub exercised: HashMap<String, DateTime<Utc>>,
}

/// Uses waiting to be written; see the module docs.
#[derive(Debug)]
pub struct UsageLog {
    enabled: bool,
    pending: Mutex<HashMap<Uuid, Seen>>,
    statements: AtomicU64,
}

impl Default for UsageLog {
    fn default() -> Self {
        Self::new(true)
    }
}

/// `agent` as stored: printable ASCII only (others become `?`), at most [`MAX_AGENT_BYTES`].
fn clean_agent(agent: &str) -> String {
    agent.chars().take(MAX_AGENT_BYTES).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

impl UsageLog {
    fn lock(&self) -> MutexGuard<'_, HashMap<Uuid, Seen>> {
        // Every update is a single-entry change, so a poisoned lock is safe to keep using.
        self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A log that notes uses (`enabled`) or ignores them.
    pub fn new(enabled: bool) -> Self {
        Self { enabled, pending: Mutex::default(), statements: AtomicU64::new(0) }
    }

    /// Records a use of key `id` now, from `address` by `agent`, for a request that required
    /// `exercised` of it. Allocates only for what is new since the last flush: the key, a changed
    /// agent, a permission.
    pub fn used<S: AsRef<str>>(&self, id: Uuid, address: Option<IpAddr>, agent: &str, exercised: &[S]) {
        if !self.enabled {
            return;
        }
        let time = Utc::now();
        let mut pending = self.lock();
        let seen = pending.entry(id).or_insert_with(|| Seen {
            time,
            address,
            agent: clean_agent(agent),
            exercised: HashMap::new(),
        });
        seen.time = time;
        seen.address = address;
        if seen.agent != agent {
            seen.agent = clean_agent(agent);
        }
        for permission in exercised {
            match seen.exercised.get_mut(permission.as_ref()) {
                Some(at) => *at = time,
                None => {
                    seen.exercised.insert(permission.as_ref().to_owned(), time);
                }
            }
        }
    }

    /// Writes the pending uses and forgets them; on failure they are kept for the next call
    /// (newer uses recorded meanwhile win).
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn flush(&self, store: &Store) -> Result<usize> {
        let batch: Vec<(Uuid, Seen)> = std::mem::take(&mut *self.lock()).into_iter().collect();
        if batch.is_empty() {
            return Ok(0);
        }
        match store.record_usage(&batch).await {
            Ok(statements) => {
                self.statements.fetch_add(statements, Ordering::Relaxed);
                Ok(batch.len())
            }
            Err(error) => {
                let mut pending = self.lock();
                for (id, seen) in batch {
                    match pending.get_mut(&id) {
                        // Used again meanwhile: its newer use stays; the older batch's permissions join it.
                        Some(newer) => {
                            for (permission, time) in seen.exercised {
                                newer.exercised.entry(permission).or_insert(time);
                            }
                        }
                        None => {
                            pending.insert(id, seen);
                        }
                    }
                }
                Err(error)
            }
        }
    }

    /// Statements written so far (the cost of tracking usage).
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_keep_the_latest_time_address_and_agent_and_every_permission() {
        let log = UsageLog::new(true);
        let id = Uuid::new_v4();
        log.used(id, Some("10.0.0.1".parse().unwrap()), "svc/1", &["read_data"]);
        log.used(id, Some("10.0.0.2".parse().unwrap()), "svc/2\n", &["edit_data"]);
        let pending = log.lock();
        let seen = &pending[&id];
        assert_eq!(seen.address, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(seen.agent, "svc/2?", "control characters are replaced");
        let mut permissions: Vec<&str> = seen.exercised.keys().map(String::as_str).collect();
        permissions.sort_unstable();
        assert_eq!(permissions, ["edit_data", "read_data"]);
        drop(pending);
        let off = UsageLog::new(false);
        off.used(id, None, "", &["read_data"]);
        assert!(off.lock().is_empty(), "tracking off notes nothing");
    }
}
