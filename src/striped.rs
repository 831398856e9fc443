//! Counters and histograms written on every RPC without sharing a cache line between cores: each
//! thread adds to its own stripe and a scrape sums the stripes. One atomic counter (or one locked
//! histogram) that every core writes moves its cache line from core to core on each call; on the
//! hot path that was a measurable share of what apikeys adds to a bare tonic call
//! (`BENCHMARKS.md`). Both encode as the Prometheus counter and histogram they replace.
//! [`stripe`] also spreads the usage log ([`crate::usage`]) over per-thread locks; the histogram
//! and the Prometheus encodings come with the `server` feature.

use std::sync::{
    Arc,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};
#[cfg(feature = "server")]
use std::time::Duration;

#[cfg(feature = "server")]
use prometheus_client::{
    encoding::{EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{MetricType, TypedMetric},
};

/// Stripes per metric. Threads take stripes in turn, so up to this many threads (a runtime's
/// workers) write lines of their own; beyond it, threads share stripes, which stays correct.
pub const STRIPES: usize = 16;

/// The stripe of the calling thread, below [`STRIPES`].
pub fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|stripe| *stripe)
}

/// One thread's share of a counter, alone on its cache line (128 bytes: adjacent-line prefetch
/// pairs 64-byte lines on x86).
#[derive(Debug, Default)]
#[repr(align(128))]
struct CounterStripe(AtomicU64);

/// A monotonic counter; clones count into the same value.
#[derive(Debug, Clone)]
pub struct StripedCounter(Arc<[CounterStripe; STRIPES]>);

impl Default for StripedCounter {
    fn default() -> Self {
        Self(Arc::new(std::array::from_fn(|_| CounterStripe::default())))
    }
}

impl StripedCounter {
    /// Adds one.
    pub fn inc(&self) {
        self.0[stripe()].0.fetch_add(1, Ordering::Relaxed);
    }

    /// The total.
    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).fold(0, u64::wrapping_add)
    }
}

#[cfg(feature = "server")]
impl TypedMetric for StripedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

#[cfg(feature = "server")]
impl EncodeMetric for StripedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The most bucket bounds a histogram keeps (`+Inf` comes on top).
#[cfg(feature = "server")]
const MAX_BUCKETS: usize = 20;

/// One thread's share of a histogram: counts per bucket (the last is `+Inf`) and the sum of the
/// observations in nanoseconds (their number is the buckets' sum).
#[cfg(feature = "server")]
#[derive(Debug)]
#[repr(align(128))]
struct HistogramStripe {
    sum_nanos: AtomicU64,
    buckets: [AtomicU64; MAX_BUCKETS + 1],
}

#[cfg(feature = "server")]
#[derive(Debug)]
struct HistogramInner {
    bounds: Vec<f64>,
    stripes: [HistogramStripe; STRIPES],
}

/// A histogram of durations with fixed buckets; clones observe into the same one.
#[cfg(feature = "server")]
#[derive(Debug, Clone)]
pub struct StripedHistogram(Arc<HistogramInner>);

#[cfg(feature = "server")]
impl StripedHistogram {
    /// A histogram whose buckets end at `bounds` (seconds, ascending) and `+Inf`. Bounds that are
    /// not finite are dropped (`+Inf` is always there); at most 20 are kept (more is a programming
    /// error, caught in debug builds).
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> Self {
        let bounds: Vec<f64> = bounds.into_iter().filter(|bound| bound.is_finite()).collect();
        debug_assert!(bounds.len() <= MAX_BUCKETS, "at most {MAX_BUCKETS} bucket bounds");
        debug_assert!(bounds.is_sorted(), "bucket bounds ascend");
        let bounds = bounds.into_iter().take(MAX_BUCKETS).collect();
        let stripes = std::array::from_fn(|_| HistogramStripe {
            sum_nanos: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        });
        Self(Arc::new(HistogramInner { bounds, stripes }))
    }

    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        let bucket = self.0.bounds.iter().position(|&bound| seconds <= bound).unwrap_or(self.0.bounds.len());
        let stripe = &self.0.stripes[stripe()];
        stripe.sum_nanos.fetch_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        stripe.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Sum (seconds), count, and each bucket's upper bound with its own (not cumulative) count.
    /// Read stripe by stripe while others write, so it may be a few observations behind, as any
    /// scrape is; each counter only grows.
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let inner = &self.0;
        let mut buckets: Vec<(f64, u64)> =
            inner.bounds.iter().copied().chain([f64::INFINITY]).map(|bound| (bound, 0)).collect();
        let mut nanos = 0u64;
        for stripe in &inner.stripes {
            for (total, value) in buckets.iter_mut().zip(&stripe.buckets) {
                total.1 = total.1.wrapping_add(value.load(Ordering::Relaxed));
            }
            nanos = nanos.wrapping_add(stripe.sum_nanos.load(Ordering::Relaxed));
        }
        // The count as the buckets say, so `_count` always equals the `+Inf` bucket.
        let count = buckets.iter().map(|(_, value)| *value).fold(0, u64::wrapping_add);
        (Duration::from_nanos(nanos).as_secs_f64(), count, buckets)
    }
}

#[cfg(feature = "server")]
impl TypedMetric for StripedHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

#[cfg(feature = "server")]
impl EncodeMetric for StripedHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    #[cfg(feature = "server")]
    use std::time::Duration;

    #[cfg(feature = "server")]
    use super::{StripedCounter, StripedHistogram};

    #[cfg(feature = "server")]
    #[test]
    fn counts_from_many_threads_add_up() {
        let counter = StripedCounter::default();
        let histogram = StripedHistogram::new([0.001, 0.002, 0.004]);
        std::thread::scope(|scope| {
            for t in 0..20u64 {
                let (counter, histogram) = (counter.clone(), histogram.clone());
                scope.spawn(move || {
                    for i in 0..1000u64 {
                        counter.inc();
                        histogram.observe(Duration::from_micros((t * 1000 + i) % 5000));
                    }
                });
            }
        });
        assert_eq!(counter.get(), 20_000);
        let (sum, count, buckets) = histogram.snapshot();
        assert_eq!(count, 20_000);
        // Thread t observes 1000 t .. 1000 t + 999 µs, wrapping at 5 ms: each whole millisecond 4
        // times; a bucket holds its upper bound (1000 µs lands in the first).
        let per_bucket: Vec<u64> = buckets.iter().map(|b| b.1).collect();
        assert_eq!(per_bucket, vec![4004, 4000, 8000, 3996], "[0,1] (1,2] (2,4] (4,inf) ms");
        let expected: u64 = (0..20u64).flat_map(|t| (0..1000u64).map(move |i| (t * 1000 + i) % 5000)).sum();
        assert!((sum - expected as f64 / 1e6).abs() < 1e-6, "{sum}");
    }

    #[cfg(feature = "server")]
    #[test]
    fn bounds_that_are_not_finite_are_dropped() {
        let histogram = StripedHistogram::new([0.001, f64::INFINITY, f64::NAN]);
        histogram.observe(Duration::from_secs(5));
        let (_, count, buckets) = histogram.snapshot();
        assert_eq!(count, 1);
        assert_eq!(buckets.len(), 2, "0.001 and +Inf once: {buckets:?}");
        assert_eq!(buckets[1], (f64::INFINITY, 1));
    }

    #[cfg(feature = "server")]
    #[test]
    fn they_encode_as_a_prometheus_counter_and_histogram() {
        let mut registry = prometheus_client::registry::Registry::default();
        let (counter, histogram) = (StripedCounter::default(), StripedHistogram::new([0.001, 0.01]));
        registry.register("things", "Things.", counter.clone());
        registry.register("wait_seconds", "Waits.", histogram.clone());
        counter.inc();
        counter.inc();
        histogram.observe(Duration::from_micros(500));
        histogram.observe(Duration::from_millis(5));
        histogram.observe(Duration::from_secs(1));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "things_total 2",
            "wait_seconds_count 3",
            "wait_seconds_bucket{le=\"0.001\"} 1",
            "wait_seconds_bucket{le=\"0.01\"} 2",
            "wait_seconds_bucket{le=\"+Inf\"} 3",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.contains("wait_seconds_sum 1.0055"), "{text}");
    }
}
