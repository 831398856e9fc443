//! When, from where and by what each key was last used, without a database write per request:
//! every successful authentication (cache hits included) updates an entry in memory, and a
//! flusher writes what changed every `usage_flush_ms` (a minute by default), all keys in one
//! statement per 500, and on graceful shutdown. A crash loses at most one interval. The database
//! keeps the latest time any replica saw: an older report never overwrites a newer one.
//!
//! Consumer services keep the same log for the requests their auth layer admits and send it to
//! apikeys (`ReportKeyUsage`, [`crate::auth::report`]), which merges it into its own.

use std::{
    collections::{HashMap, HashSet, hash_map::Entry},
    net::IpAddr,
    sync::{
        Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::SystemTime,
};

use uuid::Uuid;

use crate::striped::{STRIPES, stripe};

/// The longest user agent kept, in bytes (cut at a character boundary).
pub const MAX_AGENT_BYTES: usize = 200;

/// One key's latest use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// When.
    pub time: SystemTime,
    /// The client address, if known.
    pub address: Option<IpAddr>,
    /// The caller's user agent (for Authenticate: the consumer service's), printable, cut short.
    pub agent: String,
    /// The permissions requests required of the key, each with when last.
    pub exercised: HashMap<String, SystemTime>,
}

/// One thread's share of the pending uses, alone on its cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Stripe(Mutex<HashMap<Uuid, Seen>>);

/// Uses waiting to be written; see the module docs.
///
/// Each thread notes uses in a stripe of its own ([`crate::striped`]): every successful
/// Authenticate notes one, and a single map behind one lock would move that lock between cores on
/// each call. A key used from several threads has an entry in each of their stripes (memory is
/// bounded by keys times threads) and [`UsageLog::take`] merges them.
#[derive(Debug)]
pub struct UsageLog {
    enabled: bool,
    pending: [Stripe; STRIPES],
    statements: AtomicU64,
}

impl Default for UsageLog {
    fn default() -> Self {
        Self::new(true)
    }
}

/// `agent` as stored: printable ASCII only (others become `?`), at most [`MAX_AGENT_BYTES`].
pub fn clean_agent(agent: &str) -> String {
    agent.chars().take(MAX_AGENT_BYTES).map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '?' }).collect()
}

/// Adds `seen` to what is `noted` of the same key: the newest use keeps its time, address and
/// agent, each permission its newest time.
fn absorb(noted: &mut Seen, seen: Seen) {
    for (permission, time) in seen.exercised {
        let at = noted.exercised.entry(permission).or_insert(time);
        *at = (*at).max(time);
    }
    if seen.time > noted.time {
        (noted.time, noted.address, noted.agent) = (seen.time, seen.address, seen.agent);
    }
}

/// Adds each of `batch` to `pending`, as [`absorb`] does.
fn absorb_all(pending: &mut HashMap<Uuid, Seen>, batch: impl IntoIterator<Item = (Uuid, Seen)>) {
    for (id, seen) in batch {
        match pending.entry(id) {
            Entry::Vacant(entry) => {
                entry.insert(seen);
            }
            Entry::Occupied(mut entry) => absorb(entry.get_mut(), seen),
        }
    }
}

impl UsageLog {
    fn lock(stripe: &Stripe) -> MutexGuard<'_, HashMap<Uuid, Seen>> {
        // Every update is a single-entry change, so a poisoned lock is safe to keep using.
        stripe.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The calling thread's stripe.
    fn own(&self) -> MutexGuard<'_, HashMap<Uuid, Seen>> {
        Self::lock(&self.pending[stripe()])
    }

    /// A log that notes uses (`enabled`) or ignores them.
    pub fn new(enabled: bool) -> Self {
        Self { enabled, pending: std::array::from_fn(|_| Stripe::default()), statements: AtomicU64::new(0) }
    }

    /// Records a use of key `id` now, from `address` by `agent`, for a request that required
    /// `exercised` of it. Allocates only for what is new since the last flush: the key, a changed
    /// agent, a permission.
    pub fn used<S: AsRef<str>>(&self, id: Uuid, address: Option<IpAddr>, agent: &str, exercised: &[S]) {
        self.used_at(id, SystemTime::now(), address, agent, exercised);
    }

    /// Records a use of key `id` at `time` (a report of someone else's, which may be older than
    /// what is noted already: the newest use keeps its address and agent, each permission its
    /// newest time).
    pub fn used_at<S: AsRef<str>>(
        &self,
        id: Uuid,
        time: SystemTime,
        address: Option<IpAddr>,
        agent: &str,
        exercised: &[S],
    ) {
        if !self.enabled {
            return;
        }
        let mut pending = self.own();
        let seen = pending.entry(id).or_insert_with(|| Seen {
            time,
            address,
            agent: clean_agent(agent),
            exercised: HashMap::new(),
        });
        if time >= seen.time {
            seen.time = time;
            seen.address = address;
            if seen.agent != agent {
                seen.agent = clean_agent(agent);
            }
        }
        for permission in exercised {
            match seen.exercised.get_mut(permission.as_ref()) {
                Some(at) => *at = (*at).max(time),
                None => {
                    seen.exercised.insert(permission.as_ref().to_owned(), time);
                }
            }
        }
    }

    /// Takes every pending use, leaving the log empty; give them back with [`UsageLog::merge`]
    /// if they cannot be delivered.
    pub fn take(&self) -> Vec<(Uuid, Seen)> {
        let mut all = HashMap::new();
        for stripe in &self.pending {
            let taken = std::mem::take(&mut *Self::lock(stripe));
            absorb_all(&mut all, taken);
        }
        all.into_iter().collect()
    }

    /// Adds uses noted elsewhere: uses [`UsageLog::take`] took and could not deliver, or a
    /// consumer's report. For each key the newest use keeps its time, address and agent, and each
    /// permission its newest time.
    pub fn merge(&self, batch: Vec<(Uuid, Seen)>) {
        if !self.enabled {
            return;
        }
        absorb_all(&mut self.own(), batch);
    }

    /// How many keys have uses waiting.
    pub fn len(&self) -> usize {
        let mut keys = HashSet::new();
        for stripe in &self.pending {
            keys.extend(Self::lock(stripe).keys().copied());
        }
        keys.len()
    }

    /// Whether no use is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.iter().all(|stripe| Self::lock(stripe).is_empty())
    }

    /// Writes the pending uses and forgets them; on failure they are kept for the next call
    /// (newer uses recorded meanwhile win).
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    #[cfg(feature = "server")]
    pub async fn flush(&self, store: &crate::store::Store) -> crate::Result<usize> {
        let batch = self.take();
        if batch.is_empty() {
            return Ok(0);
        }
        match store.record_usage(&batch).await {
            Ok(statements) => {
                self.statements.fetch_add(statements, Ordering::Relaxed);
                Ok(batch.len())
            }
            Err(error) => {
                self.merge(batch);
                Err(error)
            }
        }
    }

    /// Statements (or, at a consumer, reports) written so far: the cost of tracking usage.
    pub fn statements(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Counts `n` more writes (a consumer's reports).
    pub fn count_statements(&self, n: u64) {
        self.statements.fetch_add(n, Ordering::Relaxed);
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
        let pending = log.take();
        let seen = &pending[0].1;
        assert_eq!(seen.address, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(seen.agent, "svc/2?", "control characters are replaced");
        let mut permissions: Vec<&str> = seen.exercised.keys().map(String::as_str).collect();
        permissions.sort_unstable();
        assert_eq!(permissions, ["edit_data", "read_data"]);
        let off = UsageLog::new(false);
        off.used(id, None, "", &["read_data"]);
        assert!(off.is_empty(), "tracking off notes nothing");
    }

    #[test]
    fn uses_noted_by_several_threads_come_out_as_one_entry() {
        let log = UsageLog::new(true);
        let (id, now) = (Uuid::new_v4(), SystemTime::now());
        let second = std::time::Duration::from_secs(1);
        std::thread::scope(|scope| {
            // Each thread notes its own stripe (threads take stripes in turn).
            for (n, permission) in ["read_data", "edit_data", "read_function"].into_iter().enumerate() {
                let log = &log;
                scope.spawn(move || {
                    let address = format!("10.0.0.{n}").parse().ok();
                    log.used_at(
                        id,
                        now + second * u32::try_from(n).unwrap(),
                        address,
                        &format!("svc/{n}"),
                        &[permission],
                    );
                });
            }
        });
        assert_eq!(log.len(), 1, "one key");
        let batch = log.take();
        assert!(log.is_empty());
        let (_, seen) = &batch[0];
        assert_eq!((seen.time, seen.agent.as_str()), (now + 2 * second, "svc/2"), "the newest use wins");
        assert_eq!(seen.address, Some("10.0.0.2".parse().unwrap()));
        assert_eq!(seen.exercised.len(), 3, "every permission: {:?}", seen.exercised);
        // Given back (a failed delivery) while another thread notes a newer use: both are kept,
        // and the newer use still wins.
        std::thread::scope(|scope| {
            scope.spawn(|| log.used_at(id, now + 3 * second, None, "svc/3", &["read_data"]));
        });
        log.merge(batch);
        let again = log.take();
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].1.agent.as_str(), again[0].1.exercised.len()), ("svc/3", 3));
        assert_eq!(again[0].1.exercised["read_data"], now + 3 * second);
    }

    #[test]
    fn merged_reports_keep_the_newest_use_and_each_permissions_newest_time() {
        let log = UsageLog::new(true);
        let id = Uuid::new_v4();
        let now = SystemTime::now();
        let hour = std::time::Duration::from_secs(3600);
        log.used_at(id, now - hour, Some("10.0.0.1".parse().unwrap()), "a", &["read_data"]);
        let seen = |time, address: &str, agent: &str, exercised: &[(&str, SystemTime)]| Seen {
            time,
            address: Some(address.parse().unwrap()),
            agent: agent.into(),
            exercised: exercised.iter().map(|(p, t)| ((*p).to_owned(), *t)).collect(),
        };
        // Older than what is noted: only its permissions join.
        log.merge(vec![(id, seen(now - 2 * hour, "10.0.0.2", "b", &[("edit_data", now - 2 * hour)]))]);
        // Newer: it takes over the time, address and agent.
        log.merge(vec![(id, seen(now, "10.0.0.3", "c", &[("read_data", now)]))]);
        let batch = log.take();
        assert!(log.is_empty());
        let (_, merged) = &batch[0];
        assert_eq!((merged.time, merged.agent.as_str()), (now, "c"));
        assert_eq!(merged.address, Some("10.0.0.3".parse().unwrap()));
        assert_eq!(merged.exercised["read_data"], now);
        assert_eq!(merged.exercised["edit_data"], now - 2 * hour);
        // A failed delivery comes back without undoing a newer use noted meanwhile.
        log.used(id, None, "d", &["read_function"]);
        log.merge(batch);
        let pending = log.take();
        assert_eq!(pending[0].1.agent, "d");
        assert_eq!(pending[0].1.exercised.len(), 3);
    }
}
