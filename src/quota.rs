//! Counted slots per key: at most `max` holders of one key at once, each slot given back when its
//! holder drops it, however that happens (an answer, an error, a cancelled call). Used for the
//! verifications of one API key and for the calls in flight of one client address.

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard},
};

/// The slots; see the module docs.
#[derive(Debug)]
pub struct Quota<K> {
    max: usize,
    held: Mutex<HashMap<K, usize>>,
}

/// One slot of `key`, held until dropped.
#[derive(Debug)]
pub struct Slot<K: Eq + Hash> {
    quota: Arc<Quota<K>>,
    key: K,
}

impl<K: Eq + Hash + Copy> Quota<K> {
    /// At most `max` slots per key.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, held: Mutex::new(HashMap::new()) })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<K, usize>> {
        // Every update is a single-entry change, so a poisoned lock is safe to keep using.
        self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot of `key`, or `None` if its `max` slots are all held.
    pub fn take(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut held = self.lock();
        let count = held.entry(key).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(Slot { quota: self.clone(), key })
    }
}

impl<K: Eq + Hash> Drop for Slot<K> {
    fn drop(&mut self) {
        let mut held = self.quota.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Quota;

    #[test]
    fn slots_are_capped_per_key_and_given_back() {
        let quota = Quota::new(2);
        let (a, b) = (quota.take(1).unwrap(), quota.take(1).unwrap());
        assert!(quota.take(1).is_none(), "third slot of key 1");
        let other = quota.take(2).expect("other keys are not affected");
        drop(a);
        let again = quota.take(1).expect("a dropped slot is given back");
        drop((b, again, other));
        assert!(quota.lock().is_empty(), "nothing left behind");
    }
}
