//! Prometheus metrics, served as OpenMetrics text at `GET /metrics` on a listener of its own
//! (`--metrics-listen`, off by default), never on the gRPC port.
//!
//! - `apikeys_rpc_requests_total{method,code}` and `apikeys_rpc_duration_seconds{method,code}`: every
//!   RPC, counted and timed by [`crate::rpc_trace`];
//! - `apikeys_authenticate_total{outcome}`: Authenticate results by AIP-193 reason (`OK`,
//!   `UNAUTHENTICATED`, `MISSING_PERMISSIONS`, `HASHING_BUSY`, ...);
//! - `apikeys_auth_cache_hits_total`, `apikeys_auth_cache_misses_total`: the verification cache;
//! - `apikeys_argon2_waiting`, `apikeys_argon2_computations_total`, `apikeys_argon2_waits_total`,
//!   `apikeys_argon2_wait_seconds_total`: the argon2 queue (depth now; admitted computations and their
//!   total wait for a slot, so `rate(wait_seconds)/rate(waits)` is the mean wait);
//! - `apikeys_db_pool_connections`, `apikeys_db_pool_idle_connections`: the database pool;
//! - `apikeys_change_listener_up` (0 while the PostgreSQL change listener is down: cached
//!   verifications are then trusted for `degraded_cache_ttl_ms` only),
//!   `apikeys_change_listener_connects_total`, `apikeys_key_changes_total` (changes read from the
//!   log), `apikeys_change_watchers` (open WatchKeyChanges streams): revocation.
//!
//! Method labels are limited to the methods this server knows (anything else is `unknown`), so a
//! client cannot inflate the number of series.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use axum::{extract::State, http::header, response::IntoResponse, routing::get};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{counter::ConstCounter, family::Family, gauge::ConstGauge, histogram::exponential_buckets},
    registry::Registry,
};
use tokio::net::TcpListener;

use crate::{
    auth::local::LocalAuthenticator,
    methods,
    revocation::ChangeFeed,
    store::Store,
    striped::{StripedCounter, StripedHistogram},
};

/// The label of a successful RPC's code and of a successful Authenticate.
const OK: &str = "OK";

/// Labels of the per-RPC metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RpcLabels {
    method: &'static str,
    code: &'static str,
}

/// Labels of the Authenticate outcome counter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The metrics of one server and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RpcLabels, StripedCounter>,
    durations: Family<RpcLabels, StripedHistogram, fn() -> StripedHistogram>,
    authenticate: Family<OutcomeLabels, StripedCounter>,
    /// The series of each method's `OK` answers, by its position in [`methods::all`], and of the
    /// `OK` outcome of Authenticate: made at startup, so the commonest answers are counted without
    /// a lookup by label (a lock and two string hashes). All are striped per thread
    /// ([`crate::striped`]).
    ok: Vec<(StripedCounter, StripedHistogram)>,
    authenticate_ok: StripedCounter,
}

/// Reads the state of the hasher, the cache and the pool at scrape time.
#[derive(Debug)]
struct StateCollector {
    authenticator: Arc<LocalAuthenticator>,
    store: Store,
    feed: Arc<ChangeFeed>,
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let hasher = self.authenticator.hasher();
        let cache = self.authenticator.cache();
        let e = &mut encoder;
        gauge(e, "apikeys_argon2_waiting", "Credential checks waiting for an argon2 slot.", to_i64(hasher.waiting()))?;
        counter(e, "apikeys_argon2_computations", "argon2 computations started.", hasher.computed())?;
        counter(e, "apikeys_argon2_waits", "argon2 computations admitted to wait for a slot.", hasher.waits())?;
        let waited = ConstCounter::new(hasher.wait_time().as_secs_f64());
        waited.encode(e.encode_descriptor(
            "apikeys_argon2_wait_seconds",
            "Total time admitted argon2 computations waited for a slot.",
            None,
            waited.metric_type(),
        )?)?;
        counter(e, "apikeys_auth_cache_hits", "Verification cache lookups that hit.", cache.hits())?;
        counter(e, "apikeys_auth_cache_misses", "Verification cache lookups that missed.", cache.misses())?;
        if let Some((size, idle)) = self.store.pool_state() {
            gauge(e, "apikeys_db_pool_connections", "Open database connections.", i64::from(size))?;
            gauge(e, "apikeys_db_pool_idle_connections", "Idle database connections.", to_i64(idle))?;
        }
        let feed = self.feed.stats();
        let up = i64::from(feed.listener_up.load(Ordering::Relaxed));
        gauge(e, "apikeys_change_listener_up", "Whether the change listener is connected.", up)?;
        let connects = feed.listener_connects.load(Ordering::Relaxed);
        counter(e, "apikeys_change_listener_connects", "Change listener (re)connections.", connects)?;
        let changes = feed.changes.load(Ordering::Relaxed);
        counter(e, "apikeys_key_changes", "Key changes read from the change log.", changes)?;
        let watchers = to_i64(feed.watchers.load(Ordering::Relaxed));
        gauge(e, "apikeys_change_watchers", "Open WatchKeyChanges streams.", watchers)?;
        Ok(())
    }
}

fn to_i64(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    /// The metrics of a server over `authenticator`, `store` and the change `feed`.
    pub fn new(authenticator: Arc<LocalAuthenticator>, store: Store, feed: Arc<ChangeFeed>) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RpcLabels, StripedCounter>::default();
        let durations = Family::<RpcLabels, StripedHistogram>::new_with_constructor(
            (|| StripedHistogram::new(exponential_buckets(0.001, 2.0, 15))) as fn() -> StripedHistogram,
        );
        let authenticate = Family::<OutcomeLabels, StripedCounter>::default();
        registry.register("apikeys_rpc_requests", "RPCs handled, by method and gRPC code.", requests.clone());
        registry.register("apikeys_rpc_duration_seconds", "RPC latency, by method and gRPC code.", durations.clone());
        registry.register("apikeys_authenticate", "Authenticate results, by reason.", authenticate.clone());
        registry.register_collector(Box::new(StateCollector { authenticator, store, feed }));
        let ok = (0..methods::all().len())
            .map(|i| {
                let labels = RpcLabels { method: methods::label(Some(i)), code: OK };
                (requests.get_or_create(&labels).clone(), durations.get_or_create(&labels).clone())
            })
            .collect();
        let authenticate_ok = authenticate.get_or_create(&OutcomeLabels { outcome: OK }).clone();
        Self { registry, requests, durations, authenticate, ok, authenticate_ok }
    }

    /// Counts and times one RPC of the method at `method` in [`methods::all`] (`None`: unknown).
    pub fn observe_rpc(&self, method: Option<usize>, code: &'static str, latency: Duration) {
        if code == OK
            && let Some((requests, durations)) = method.and_then(|i| self.ok.get(i))
        {
            requests.inc();
            durations.observe(latency);
            return;
        }
        let labels = RpcLabels { method: methods::label(method), code };
        self.requests.get_or_create(&labels).inc();
        self.durations.get_or_create(&labels).observe(latency);
    }

    /// Counts one Authenticate result (`OK` or the AIP-193 reason).
    pub fn observe_authenticate(&self, outcome: &'static str) {
        if outcome == OK {
            self.authenticate_ok.inc();
            return;
        }
        // A static label: no allocation on the hottest RPC.
        self.authenticate.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            tracing::error!("cannot encode metrics");
        }
        text
    }
}

async fn scrape(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], metrics.render())
}

/// Serves `GET /metrics` on `listener` until the task is dropped or aborted.
///
/// # Errors
/// Accept-loop failures.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let router = axum::Router::new().route("/metrics", get(scrape)).with_state(metrics);
    axum::serve(listener, router).await
}
