//! The remote authenticator: what a consumer service embeds. It calls `ApiKeyService.Authenticate`
//! over a tonic channel, with a deadline (default 2 s, as both `grpc-timeout` and a local timer), and
//! caches successes locally.
//!
//! - **Revocation.** By default the authenticator follows apikeys' `WatchKeyChanges` stream
//!   ([`super::watch`]) and drops a changed key's entries as soon as the change commits (within about
//!   a second, on every replica). For [`QUARANTINE`] after a change it does not cache that key's
//!   results, in case the replica that answers has not heard of the change yet. While the stream is
//!   down, the cache TTL (default 30 s, [`DEFAULT_CACHE_TTL`]) is the bound: the longest a revoked
//!   credential can still pass here. A zero TTL disables the cache.
//! - **Cache.** Bounded (default 10 000 entries), keyed by HMAC-SHA256 under a process-random key of
//!   key id ‖ secret, never the secret itself. Failures are never cached.
//! - **Single flight.** Concurrent misses for the same credential share one upstream call; a cancelled
//!   request hands the call over to the next waiter and leaves nothing behind.
//! - **apikeys down.** Credentials not in the cache are refused with UNAVAILABLE (fail closed). Cached
//!   ones keep passing until their entry expires (at most one TTL after their last verification), then
//!   are refused with UNAVAILABLE too; so a short outage does not take every consumer down with it,
//!   and a long one cannot extend a key's life beyond the TTL.
//! - **Usage reports.** With [`RemoteConfig::usage_report`], the uses the auth layer admits (cache
//!   hits included) are reported to apikeys in batches ([`super::report`]), so its last-used and
//!   least-privilege reports see them.

use std::{sync::Arc, time::Duration};

use tonic::Code;

use super::{
    Authenticator, Credential, Principal,
    cache::{CacheKey, Verified, VerifiedCache},
    flight::SingleFlight,
    report::{Reporter, UsageReport},
    watch::{AbortOnDrop, WatchStats},
};
use crate::{
    error::{Error, Result},
    pb::{AuthenticateRequest, api_key_service_client::ApiKeyServiceClient},
    replicas::RetryUnsent,
};

/// Default local cache TTL: the longest a revoked key can still pass at a consumer.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30);
/// Default deadline of one upstream Authenticate call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default number of cached credentials.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;
/// How long after a change of a key its results are not cached.
pub const QUARANTINE: Duration = Duration::from_secs(2);

/// Authenticates against a remote apikeys server; see the module docs.
#[derive(Debug)]
pub struct RemoteAuthenticator {
    client: ApiKeyServiceClient<RetryUnsent>,
    timeout: Duration,
    cache: Arc<VerifiedCache>,
    flights: SingleFlight<CacheKey, Verified>,
    watch: Arc<WatchStats>,
    _watcher: Option<AbortOnDrop>,
    reporter: Option<Arc<Reporter>>,
    _reporting: Option<AbortOnDrop>,
}

/// Settings of a [`RemoteAuthenticator`].
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// Deadline of one Authenticate call.
    pub timeout: Duration,
    /// How long a success is cached; zero disables the cache.
    pub cache_ttl: Duration,
    /// How many credentials are cached at most.
    pub cache_capacity: usize,
    /// Whether to follow apikeys' change stream (revocation within about a second instead of the
    /// TTL).
    pub watch: bool,
    /// Whether and how to report the uses the auth layer admits; `None`: not reported, so
    /// apikeys' last-used and least-privilege reports miss this service's cache hits.
    pub usage_report: Option<UsageReport>,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            cache_ttl: DEFAULT_CACHE_TTL,
            cache_capacity: DEFAULT_CACHE_CAPACITY,
            watch: true,
            usage_report: None,
        }
    }
}

impl RemoteAuthenticator {
    /// An authenticator calling apikeys over `channel`: one endpoint
    /// (`Endpoint::from_static(..).connect_lazy()`, so a consumer can start while apikeys is down),
    /// or the channel of a [`crate::replicas::Replicas`] set. With `config.watch` and a cache, it follows
    /// the change stream on a task of its own (called inside a Tokio runtime), stopped when the
    /// authenticator is dropped.
    ///
    /// With `config.usage_report`, it reports uses on another task (every interval, and on
    /// [`RemoteAuthenticator::flush_usage`]); without a runtime, only on `flush_usage`.
    ///
    /// # Errors
    /// A cache TTL longer than a day, or a failing OS random source (startup).
    pub fn new(channel: impl Into<RetryUnsent>, config: RemoteConfig) -> Result<Self, super::cache::CacheError> {
        let client = ApiKeyServiceClient::new(channel.into());
        let cache = Arc::new(VerifiedCache::new(config.cache_ttl, config.cache_capacity)?.with_quarantine(QUARANTINE));
        let watch = Arc::new(WatchStats::default());
        let caching = !config.cache_ttl.is_zero() && config.cache_capacity > 0;
        let watcher = match tokio::runtime::Handle::try_current() {
            Ok(runtime) if config.watch && caching => {
                let task = super::watch::follow(client.clone(), Arc::downgrade(&cache), watch.clone());
                Some(AbortOnDrop(runtime.spawn(task)))
            }
            Err(_) if config.watch && caching => {
                tracing::warn!(
                    "no Tokio runtime: not following apikeys key changes; revocation waits for the cache TTL"
                );
                None
            }
            _ => None,
        };
        let reporter = match &config.usage_report {
            Some(report) => Some(Arc::new(Reporter::new(client.clone(), report, config.timeout))),
            None => None,
        };
        let reporting = reporter.as_ref().zip(config.usage_report.as_ref()).and_then(|(reporter, report)| {
            let runtime = tokio::runtime::Handle::try_current().ok()?;
            Some(reporter.spawn(&runtime, report.interval))
        });
        Ok(Self {
            client,
            timeout: config.timeout,
            cache,
            flights: SingleFlight::default(),
            watch,
            _watcher: watcher,
            reporter,
            _reporting: reporting,
        })
    }

    /// Sends the uses not reported yet (call it on graceful shutdown); returns how many keys'
    /// uses apikeys recorded. Without `usage_report`, does nothing.
    ///
    /// # Errors
    /// See [`Reporter::flush`]; what was not sent is kept for the next report.
    pub async fn flush_usage(&self) -> Result<usize> {
        match &self.reporter {
            Some(reporter) => reporter.flush().await,
            None => Ok(0),
        }
    }

    /// The usage reporter, if reporting (exposed for metrics and tests).
    pub fn reporter(&self) -> Option<&Reporter> {
        self.reporter.as_deref()
    }

    /// The local cache (exposed for metrics and tests).
    pub fn cache(&self) -> &VerifiedCache {
        &self.cache
    }

    /// The change stream's state and counters (for metrics: `connected` false means revocation
    /// waits for the TTL).
    pub fn watch_stats(&self) -> &WatchStats {
        &self.watch
    }

    async fn call_upstream(&self, credential: &Credential) -> Result<Arc<Principal>> {
        // The auth layer checks the network and the rate of every request it admits, cache hits
        // included, so apikeys answers with the principal for any client.
        let authenticate =
            AuthenticateRequest { token: credential.token(), caller_enforces_restrictions: true, ..Default::default() };
        let mut request = tonic::Request::new(authenticate);
        request.set_timeout(self.timeout);
        let mut client = self.client.clone();
        let call = client.authenticate(request);
        let response = match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(upstream_error)?,
            Err(_) => return Err(Error::Unavailable("apikeys")),
        };
        response
            .into_inner()
            .principal
            .map(Arc::new)
            .ok_or_else(|| Error::internal("Authenticate returned no principal"))
    }
}

/// Maps an upstream status to our error, failing closed: nothing but OK lets a request through.
fn upstream_error(status: tonic::Status) -> Error {
    match status.code() {
        Code::Unauthenticated | Code::InvalidArgument | Code::NotFound => Error::Unauthenticated,
        Code::ResourceExhausted => Error::HashingBusy,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            tracing::warn!(code = ?status.code(), message = status.message(), "apikeys unreachable");
            Error::Unavailable("apikeys")
        }
        code => Error::internal(format!("apikeys answered {code:?}: {}", status.message())),
    }
}

impl Authenticator for RemoteAuthenticator {
    async fn authenticate(&self, credential: Credential) -> Result<Principal> {
        self.cache.get_or_verify(&self.flights, &credential, || self.call_upstream(&credential)).await
    }

    fn admitted(&self, principal: &Principal, client: Option<std::net::IpAddr>, agent: &str, required: &[String]) {
        if let Some(reporter) = &self.reporter
            && let Ok(id) = principal.key_id.parse()
        {
            reporter.log().used(id, client, agent, required);
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::transport::Endpoint;

    use super::*;
    use crate::auth::Secret;

    fn credential() -> Credential {
        Credential { key_id: uuid::Uuid::new_v4(), secret: Secret::generate().unwrap() }
    }

    fn authenticator(addr: std::net::SocketAddr, timeout: Duration) -> RemoteAuthenticator {
        let channel = Endpoint::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
        RemoteAuthenticator::new(channel, RemoteConfig { timeout, ..RemoteConfig::default() }).unwrap()
    }

    #[tokio::test]
    async fn unreachable_apikeys_fails_closed_and_nothing_is_cached() {
        // A port that was just free: connections are refused.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let auth = authenticator(addr, Duration::from_secs(2));
        let error = auth.authenticate(credential()).await.unwrap_err();
        assert_eq!(error.code(), Code::Unavailable, "{error:?}");
        assert!(auth.cache().is_empty());
        assert!(auth.flights.is_empty());
    }

    #[tokio::test]
    async fn a_silent_apikeys_hits_the_deadline_and_cancelled_waiters_leave_nothing_behind() {
        // Accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let auth = authenticator(addr, Duration::from_millis(200));
        let started = std::time::Instant::now();
        let error = auth.authenticate(credential()).await.unwrap_err();
        assert_eq!(error.code(), Code::Unavailable, "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "the deadline was not applied");

        let cred = credential();
        let (a, b) = tokio::join!(
            tokio::time::timeout(Duration::from_millis(20), auth.authenticate(cred.clone())),
            tokio::time::timeout(Duration::from_millis(40), auth.authenticate(cred.clone())),
        );
        assert!(a.is_err() && b.is_err(), "both waiters are cancelled");
        assert!(auth.flights.is_empty(), "a cancelled call stayed in the table");
    }
}
