//! Single flight: concurrent requests for the same key share one computation. apikeys verifies one
//! credential with one argon2 computation however many requests present it at once, and a consumer
//! makes one upstream Authenticate call for them.
//!
//! A waiter that is cancelled hands the computation over to the next one (the computation is a
//! future the waiters poll, not a task), and the last one to leave removes the entry: nothing is left
//! behind.

use std::{
    collections::HashMap,
    future::Future,
    hash::Hash,
    sync::{Arc, Mutex, MutexGuard},
};

use tokio::sync::OnceCell;

type Flight<V> = Arc<OnceCell<V>>;

/// Computations in progress, by key.
#[derive(Debug)]
pub struct SingleFlight<K, V> {
    in_flight: Mutex<HashMap<K, Flight<V>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self { in_flight: Mutex::new(HashMap::new()) }
    }
}

/// One waiter's place in a flight; leaving (however) removes the flight once it is done or nobody
/// else waits on it.
struct Seat<'a, K: Eq + Hash, V> {
    table: &'a SingleFlight<K, V>,
    key: K,
    flight: Flight<V>,
}

impl<K: Eq + Hash, V> Drop for Seat<'_, K, V> {
    fn drop(&mut self) {
        let mut in_flight = self.table.lock();
        let ours = in_flight.get(&self.key).is_some_and(|f| Arc::ptr_eq(f, &self.flight));
        // Two holders left means the table and us: nobody else waits on this computation.
        if ours && (self.flight.initialized() || Arc::strong_count(&self.flight) <= 2) {
            in_flight.remove(&self.key);
        }
    }
}

impl<K, V> SingleFlight<K, V> {
    fn lock(&self) -> MutexGuard<'_, HashMap<K, Flight<V>>> {
        // Every update is a single insert or remove, so a poisoned lock is safe to keep using.
        self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether no computation is in progress.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

impl<K: Eq + Hash + Copy, V: Clone> SingleFlight<K, V> {
    /// The result of `compute` for `key`, computed once for every caller waiting at the same time.
    /// `settle` sees the result while the flight is still registered, so a caller arriving meanwhile
    /// either joins the flight or finds what `settle` stored (a cache entry): it never computes again.
    pub async fn run<F: Future<Output = V>>(&self, key: K, compute: impl FnOnce() -> F, settle: impl FnOnce(&V)) -> V {
        let flight = self.lock().entry(key).or_default().clone();
        let seat = Seat { table: self, key, flight };
        let value = seat.flight.get_or_init(compute).await.clone();
        settle(&value);
        drop(seat);
        value
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_one_computation_and_leave_nothing() {
        let flights = SingleFlight::<u8, usize>::default();
        let computed = AtomicUsize::new(0);
        let compute = || async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            computed.fetch_add(1, Ordering::SeqCst) + 1
        };
        let settled = AtomicUsize::new(0);
        let settle = |_: &usize| {
            settled.fetch_add(1, Ordering::SeqCst);
        };
        let results = futures::future::join_all((0..20).map(|_| flights.run(7, compute, settle))).await;
        assert_eq!(results, vec![1; 20]);
        assert_eq!(computed.load(Ordering::SeqCst), 1);
        assert_eq!(settled.load(Ordering::SeqCst), 20, "every caller settles");
        assert!(flights.is_empty());
        assert_eq!(flights.run(7, compute, |_| {}).await, 2, "a later call computes again");
    }

    #[tokio::test]
    async fn a_cancelled_leader_hands_over_and_nothing_is_left() {
        let flights = SingleFlight::<u8, u8>::default();
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            1
        };
        let cancelled = tokio::time::timeout(Duration::from_millis(20), flights.run(1, slow, |_| {})).await;
        assert!(cancelled.is_err());
        assert!(flights.is_empty(), "the only waiter left");
        assert_eq!(flights.run(1, || async { 2 }, |_| {}).await, 2);
    }
}
