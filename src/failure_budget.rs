//! A budget of failed authentications per client address: a token bucket refilled at `per_second`
//! and holding up to twice that. Every failure from an address (an unknown key, a wrong secret, a
//! locked key, a guess shed because its key is busy) spends one token. Once an address has none
//! left, its credentials that are not in the cache are refused with RESOURCE_EXHAUSTED
//! (`TOO_MANY_FAILURES`) after [`TARPIT`], before any database lookup: a flood of forged credentials
//! then costs the server a cache lookup per call, and, since its calls in flight are capped too
//! ([`crate::peer_limit`]), it can send only so many per second. Cached credentials from that
//! address keep working, and other addresses are not affected.
//!
//! IPv6 addresses are counted by their /64 prefix (one host usually holds a whole /64), IPv4 ones
//! alone.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// How long a refusal for an exhausted budget is held before it is sent.
pub const TARPIT: Duration = Duration::from_millis(100);

/// Most addresses tracked at once; beyond that, addresses whose budget is full again are forgotten.
const MAX_TRACKED: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The budgets; see the module docs.
#[derive(Debug)]
pub struct FailureBudget {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// The address a budget is kept for: IPv4 as is, IPv6 by its /64.
fn budget_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

impl FailureBudget {
    /// `per_second` failures per address and second, bursts of twice that; `None` for 0 (no budget).
    pub fn new(per_second: u32) -> Option<Self> {
        (per_second > 0).then(|| Self {
            per_second: f64::from(per_second),
            burst: 2.0 * f64::from(per_second),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, Bucket>> {
        // Every update is a single-entry change, so a poisoned lock is safe to keep using.
        self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.per_second).min(self.burst)
    }

    /// Whether `ip` has spent its budget.
    pub fn exhausted(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        self.lock().get(&budget_key(ip)).is_some_and(|bucket| self.refilled(*bucket, now) < 1.0)
    }

    /// Spends one token of `ip`'s budget (a failure from it).
    pub fn charge(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut buckets = self.lock();
        if buckets.len() >= MAX_TRACKED {
            buckets.retain(|_, bucket| self.refilled(*bucket, now) < self.burst);
            if buckets.len() >= MAX_TRACKED {
                // Still full: forget everyone rather than grow without bound.
                buckets.clear();
            }
        }
        let bucket = buckets.entry(budget_key(ip)).or_insert(Bucket { tokens: self.burst, updated: now });
        *bucket = Bucket { tokens: (self.refilled(*bucket, now) - 1.0).max(0.0), updated: now };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_are_per_address_refill_and_group_ipv6_by_prefix() {
        let budget = FailureBudget::new(5).unwrap();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..10 {
            assert!(!budget.exhausted(a));
            budget.charge(a);
        }
        assert!(budget.exhausted(a), "a burst of twice the rate is spent");
        assert!(!budget.exhausted(b), "other addresses keep theirs");
        std::thread::sleep(Duration::from_millis(250));
        assert!(!budget.exhausted(a), "refilled at 5 per second");

        let (v6a, v6b): (IpAddr, IpAddr) = ("2001:db8::1".parse().unwrap(), "2001:db8::ffff".parse().unwrap());
        for _ in 0..10 {
            budget.charge(v6a);
        }
        assert!(budget.exhausted(v6b), "one /64, one budget");
        assert!(!budget.exhausted("2001:db8:0:1::1".parse().unwrap()));
        assert_eq!(budget_key("::ffff:10.0.0.1".parse().unwrap()), a);
        assert!(FailureBudget::new(0).is_none());
    }
}
