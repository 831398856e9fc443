//! The in-process authenticator that apikeys' own RPCs use: cache, then store lookup and argon2
//! verification. It is also what the Authenticate RPC runs, so remote consumers and the admin RPCs go
//! through the same code.

use std::{net::IpAddr, sync::Arc};

use super::{
    Authenticator, Credential, Principal,
    cache::{Answer, CacheKey, Verified, VerifiedCache},
    flight::SingleFlight,
    hashing::{Hasher, SecretHash},
    jwt::UserTokens,
};
use crate::{
    domain::{ApiKey, KeyId},
    error::{Error, Result},
    failure_budget::{FailureBudget, TARPIT},
    lockout::FailureLog,
    pb::{PrincipalRestrictions, PrincipalType},
    quota::Quota,
    store::Store,
    usage::UsageLog,
};

/// Verifies credentials against the store; see the module docs.
#[derive(Debug)]
pub struct LocalAuthenticator {
    store: Store,
    hasher: Arc<Hasher>,
    cache: Arc<VerifiedCache>,
    flights: SingleFlight<CacheKey, Verified>,
    per_key: Arc<Quota<KeyId>>,
    failures: Arc<FailureLog>,
    budget: Option<Arc<FailureBudget>>,
    usage: Arc<UsageLog>,
    users: Option<Arc<UserTokens>>,
}

/// Most verifications of one key ID in progress at once (distinct secrets: the same credential
/// shares one). Two is enough for a key in rotation; beyond that a flood of guesses against one key
/// is shed at once instead of filling the verification lane that every other key needs.
const MAX_VERIFICATIONS_PER_KEY: usize = 2;

impl LocalAuthenticator {
    /// An authenticator over `store`, verifying with `hasher`, caching in `cache` (which the key
    /// lifecycle shares, to drop a key's entries when it changes).
    /// Failed verifications go to `failures`, which locks keys in batches, and are charged to the
    /// caller's address in `budget` (see [`crate::failure_budget`]), if there is one. The
    /// requests apikeys' own auth layer admits are noted in `usage`.
    pub fn new(
        store: Store,
        hasher: Arc<Hasher>,
        cache: Arc<VerifiedCache>,
        failures: Arc<FailureLog>,
        budget: Option<Arc<FailureBudget>>,
        usage: Arc<UsageLog>,
    ) -> Self {
        Self {
            store,
            hasher,
            cache,
            flights: SingleFlight::default(),
            per_key: Quota::new(MAX_VERIFICATIONS_PER_KEY),
            failures,
            budget,
            usage,
            users: None,
        }
    }

    /// The verifier of people's platform JWTs, if they are accepted.
    pub fn users(&self) -> Option<&Arc<UserTokens>> {
        self.users.as_ref()
    }

    /// Also accepts people's platform JWTs, verified by `users` (see [`super::jwt`]), on the
    /// requests of apikeys' own auth layer. The Authenticate RPC never does.
    #[must_use]
    pub fn with_users(mut self, users: Option<Arc<UserTokens>>) -> Self {
        self.users = users;
        self
    }

    /// Where uses of keys wait to be written: those admitted by apikeys' own auth layer, and
    /// those the Authenticate and ReportKeyUsage RPCs add.
    pub fn usage(&self) -> &Arc<UsageLog> {
        &self.usage
    }

    /// [`Authenticator::authenticate`] for a caller at `peer`: a credential that is not cached is
    /// refused with RESOURCE_EXHAUSTED (`TOO_MANY_FAILURES`), after [`TARPIT`], while that address has
    /// spent its failure budget; the failures it causes are charged to it.
    ///
    /// # Errors
    /// What [`Authenticator::authenticate`] returns, and `TooManyFailures`.
    pub async fn authenticate_from(&self, credential: Credential, peer: Option<IpAddr>) -> Result<Principal> {
        let verify = || self.verify_within_budget(&credential, peer);
        let result = self.cache.get_or_verify(&self.flights, &credential, verify).await;
        self.charge_failure(peer, &result);
        result
    }

    /// [`LocalAuthenticator::authenticate_from`] answering with the cached principal and its
    /// `AuthenticateResponse` encoding (the Authenticate RPC sends those bytes as they are).
    ///
    /// # Errors
    /// As [`LocalAuthenticator::authenticate_from`].
    pub async fn answer_from(&self, credential: Credential, peer: Option<IpAddr>) -> Result<Answer> {
        let verify = || self.verify_within_budget(&credential, peer);
        let result = self.cache.get_or_verify_answer(&self.flights, &credential, verify).await;
        self.charge_failure(peer, &result);
        result
    }

    /// Verifies an uncached `credential`, unless `peer` has spent its failure budget: then
    /// `TooManyFailures`, after [`TARPIT`].
    async fn verify_within_budget(&self, credential: &Credential, peer: Option<IpAddr>) -> Result<Arc<Principal>> {
        if let Some((budget, ip)) = self.budget.as_ref().zip(peer)
            && budget.exhausted(ip)
        {
            tokio::time::sleep(TARPIT).await;
            return Err(Error::TooManyFailures);
        }
        self.verify(credential).await
    }

    /// Charges a failed verification (a wrong credential, or one refused for want of hashing
    /// capacity) to `peer`'s failure budget.
    fn charge_failure<T>(&self, peer: Option<IpAddr>, result: &Result<T>) {
        if let (Some((budget, ip)), Err(Error::Unauthenticated | Error::HashingBusy)) =
            (self.budget.as_ref().zip(peer), result)
        {
            budget.charge(ip);
        }
    }

    /// The hasher (its counters feed metrics and tests).
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// The verification cache.
    pub fn cache(&self) -> &VerifiedCache {
        &self.cache
    }

    /// The failure budget per client address, if there is one (the per-address call cap reads it).
    pub fn budget(&self) -> Option<Arc<FailureBudget>> {
        self.budget.clone()
    }
}

/// The principal of `key`, with the rules every platform service must apply to API key accounts:
/// not a person, so no interactive login, exempt from two-factor authentication, cannot own incidents
/// or be a member of incidents, tasks or groups; unowned incidents it creates go to `default_group`.
pub fn principal_of(key: ApiKey, default_group: String) -> Principal {
    Principal {
        expire_time: key.expire_time.map(crate::pb::timestamp),
        key_id: key.id.to_string(),
        org_id: key.org_id.to_string(),
        display_name: key.display_name,
        permissions: key.permissions,
        app_id: key.app_id.unwrap_or_default(),
        allowed_cidrs: key.allowed_cidrs,
        rate_limit: key.rate_limit.map(Into::into),
        principal_type: PrincipalType::ApiKey.into(),
        user_id: String::new(),
        restrictions: Some(PrincipalRestrictions {
            interactive_login_allowed: false,
            two_factor_required: false,
            can_own_incidents: false,
            can_be_incident_member: false,
            can_be_task_member: false,
            can_be_group_member: false,
            unowned_incident_group: default_group,
        }),
    }
}

impl LocalAuthenticator {
    /// Verifies `credential` against the store: an unknown key ID is refused without hashing (IDs are
    /// random, not secret: nothing is learned from the speed of that answer, which is the same
    /// answer), a known one costs one argon2 verification, of which at most
    /// [`MAX_VERIFICATIONS_PER_KEY`] run at once (RESOURCE_EXHAUSTED beyond). The rest of the key is read only after a
    /// match, and the hash compared again, since the key may have been regenerated or deleted
    /// meanwhile. A hash made with other parameters than the configured ones is replaced once its
    /// secret verified.
    async fn verify(&self, credential: &Credential) -> Result<Arc<Principal>> {
        let id = credential.key_id.into();
        let Some(stored) = self.store.find_secret_hash(id).await? else { return Err(Error::Unauthenticated) };
        // Locked, disabled or expired: the same answer as a wrong secret, and no argon2.
        if stored.refused {
            return Err(Error::Unauthenticated);
        }
        let Some(slot) = self.per_key.take(id) else { return Err(Error::HashingBusy) };
        // The current secret, then the previous one during a rotation's grace period.
        let mut matched = None;
        for hash in std::iter::once(stored.hash).chain(stored.previous) {
            if self.hasher.verify(&credential.secret, &hash).await? {
                matched = Some(hash);
                break;
            }
        }
        drop(slot);
        let Some(hash) = matched else {
            self.failures.failed(id);
            return Err(Error::Unauthenticated);
        };
        // Read again after the match: the key may have changed meanwhile.
        let now = chrono::Utc::now();
        let record = self
            .store
            .find_auth_record(id, &hash)
            .await?
            .filter(|r| r.key.state(now) == crate::domain::KeyState::Active);
        let Some(record) = record else { return Err(Error::Unauthenticated) };
        self.failures.succeeded(id, stored.failed_attempts);
        // The previous secret is on its way out: not worth rehashing.
        if record.previous_until.is_none() && !self.hasher.is_current(&hash) {
            self.rehash(id, credential, hash).await;
        }
        let mut key = record.key;
        // A previous secret's principal lasts no longer than its grace period, in any cache.
        if let Some(until) = record.previous_until {
            key.expire_time = Some(key.expire_time.map_or(until, |at| at.min(until)));
        }
        Ok(Arc::new(principal_of(key, record.default_group)))
    }

    /// Stores `credential`'s secret hashed with the configured parameters, unless the key changed
    /// meanwhile. A failure only means it is tried again on the next verification.
    async fn rehash(&self, id: KeyId, credential: &Credential, old: SecretHash) {
        let result = match self.hasher.rehash(&credential.secret).await {
            Ok(new) => self.store.replace_secret_hash(id, &old, new).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => tracing::info!(key_id = %id, "secret rehashed with the configured argon2 parameters"),
            Err(error) => tracing::warn!(key_id = %id, %error, "could not rehash a secret; will retry"),
        }
    }
}

impl Authenticator for LocalAuthenticator {
    async fn authenticate(&self, credential: Credential) -> Result<Principal> {
        self.authenticate_from(credential, None).await
    }

    async fn authenticate_bearer(&self, token: &str) -> Result<Principal> {
        match &self.users {
            Some(users) => users.verify(token).await,
            None => Err(Error::Unauthenticated),
        }
    }

    fn admitted(&self, principal: &Principal, client: Option<IpAddr>, agent: &str, required: &[String]) {
        if let Ok(id) = principal.key_id.parse() {
            self.usage.used(id, client, agent, required);
        }
    }
}
