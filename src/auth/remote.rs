//! The remote authenticator: what a consumer service embeds. It calls `ApiKeyService.Authenticate`
//! over a tonic channel, with a deadline, and caches successes locally.
//!
//! The cache TTL (default 30 s) is the longest a revoked, regenerated or deleted key can still pass at
//! this consumer. Failures are never cached. Concurrent misses for the same credential share one
//! upstream call. When apikeys cannot be reached, credentials not in the cache are refused with
//! UNAVAILABLE (fail closed); cached ones keep passing until their entry expires, so a short apikeys
//! outage does not take every consumer down with it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::OnceCell;
use tonic::{Code, transport::Channel};

use super::{
    Authenticator, Credential, Principal,
    cache::{CacheKey, VerifiedCache},
};
use crate::{
    error::{Error, Result},
    pb::{AuthenticateRequest, api_key_service_client::ApiKeyServiceClient},
};

/// Default local cache TTL: the longest a revoked key can still pass at a consumer.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30);
/// Default deadline of one upstream Authenticate call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default number of cached credentials.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

type Flight = Arc<OnceCell<Result<Arc<Principal>>>>;

/// Authenticates against a remote apikeys server; see the module docs.
#[derive(Debug)]
pub struct RemoteAuthenticator {
    client: ApiKeyServiceClient<Channel>,
    timeout: Duration,
    cache: VerifiedCache,
    in_flight: Mutex<HashMap<CacheKey, Flight>>,
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
}

impl Default for RemoteConfig {
    fn default() -> Self {
        Self { timeout: DEFAULT_TIMEOUT, cache_ttl: DEFAULT_CACHE_TTL, cache_capacity: DEFAULT_CACHE_CAPACITY }
    }
}

impl RemoteAuthenticator {
    /// An authenticator calling apikeys over `channel` (e.g. `Endpoint::from_static(..).connect_lazy()`,
    /// so a consumer can start while apikeys is down).
    ///
    /// # Errors
    /// Fails only if the OS random source fails (startup).
    pub fn new(channel: Channel, config: RemoteConfig) -> Result<Self, getrandom::Error> {
        Ok(Self {
            client: ApiKeyServiceClient::new(channel),
            timeout: config.timeout,
            cache: VerifiedCache::new(config.cache_ttl, config.cache_capacity)?,
            in_flight: Mutex::new(HashMap::new()),
        })
    }

    /// The local cache (exposed for metrics and tests).
    pub fn cache(&self) -> &VerifiedCache {
        &self.cache
    }

    async fn call_upstream(&self, credential: &Credential) -> Result<Arc<Principal>> {
        let mut request = tonic::Request::new(AuthenticateRequest { token: credential.token(), ..Default::default() });
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
        let key = self.cache.key(&credential);
        if let Some(principal) = self.cache.get(&key) {
            return Ok((*principal).clone());
        }
        let epoch = self.cache.epoch();
        let flight = {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            in_flight.entry(key).or_default().clone()
        };
        let result = flight.get_or_init(|| self.call_upstream(&credential)).await.clone();
        {
            let mut in_flight = self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if in_flight.get(&key).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
                in_flight.remove(&key);
            }
        }
        let principal = result?;
        self.cache.insert(key, principal.clone(), credential.key_id, epoch);
        Ok((*principal).clone())
    }
}
