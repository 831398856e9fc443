//! The in-process authenticator that apikeys' own RPCs use: cache, then store lookup and argon2
//! verification. It is also what the Authenticate RPC runs, so remote consumers and the admin RPCs go
//! through the same code.

use std::sync::Arc;

use super::{Authenticator, Credential, Principal, cache::VerifiedCache, hashing::Hasher};
use crate::{
    domain::ApiKey,
    error::{Error, Result},
    pb::{PrincipalRestrictions, PrincipalType},
    store::Store,
};

/// Verifies credentials against the store; see the module docs.
#[derive(Debug)]
pub struct LocalAuthenticator {
    store: Store,
    hasher: Arc<Hasher>,
    cache: Arc<VerifiedCache>,
}

impl LocalAuthenticator {
    /// An authenticator over `store`, verifying with `hasher`, caching in `cache` (which the key
    /// lifecycle shares, to drop a key's entries when it changes).
    pub fn new(store: Store, hasher: Arc<Hasher>, cache: Arc<VerifiedCache>) -> Self {
        Self { store, hasher, cache }
    }

    /// The hasher (its counters feed metrics and tests).
    pub fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// The verification cache.
    pub fn cache(&self) -> &VerifiedCache {
        &self.cache
    }
}

/// The principal of `key`, with the rules every platform service must apply to API key accounts:
/// not a person, so no interactive login, exempt from two-factor authentication, cannot own incidents
/// or be a member of incidents, tasks or groups; unowned incidents it creates go to `default_group`.
pub fn principal_of(key: ApiKey, default_group: String) -> Principal {
    Principal {
        key_id: key.id.to_string(),
        org_id: key.org_id.to_string(),
        display_name: key.display_name,
        permissions: key.permissions,
        app_id: key.app_id.unwrap_or_default(),
        principal_type: PrincipalType::ApiKey.into(),
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

impl Authenticator for LocalAuthenticator {
    async fn authenticate(&self, credential: Credential) -> Result<Principal> {
        let cache_key = self.cache.key(&credential);
        if let Some(principal) = self.cache.get(&cache_key) {
            return Ok((*principal).clone());
        }
        let epoch = self.cache.epoch();
        let hash = self.store.find_secret_hash(credential.key_id.into()).await?;
        let matched = self.hasher.verify(&credential.secret, hash.clone()).await?;
        if !matched {
            return Err(Error::Unauthenticated);
        }
        // The rest is read only after a match, so unknown keys and wrong secrets take the same path.
        // The hash is compared again: the key may have been regenerated or deleted meanwhile.
        match self.store.find_auth_record(credential.key_id.into()).await? {
            Some(record) if Some(&record.secret_hash) == hash.as_ref() => {
                let principal = Arc::new(principal_of(record.key, record.default_group));
                self.cache.insert(cache_key, principal.clone(), credential.key_id, epoch);
                Ok((*principal).clone())
            }
            _ => Err(Error::Unauthenticated),
        }
    }
}
