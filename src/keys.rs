//! The API key lifecycle: create, read, list, update, regenerate, delete, and bootstrap. Takes
//! validated input (the service parses requests at the edge), enforces the escalation and app-impact
//! rules, persists through the store, and invalidates cached verifications after every change (even
//! when the caller is gone).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::Notify;
use uuid::Uuid;

use crate::{
    auth::{Credential, Secret, cache::VerifiedCache, hashing::Hasher},
    domain::{self, Actor, ApiKey, Caller, Catalog, DisplayName, KeyId, OrgId, OrgPolicy},
    error::{Error, Result},
    lockout::FailureLog,
    store::{AuditQuery, Change, KeyChanges, ListQuery, NewKey, Org, Store},
};

/// A key with its freshly generated credential (shown once).
#[derive(Debug)]
pub struct Issued {
    /// The key.
    pub key: ApiKey,
    /// Its credential.
    pub credential: Credential,
}

/// A new key, validated.
#[derive(Debug, Clone)]
pub struct CreateKey {
    /// Display name.
    pub display_name: DisplayName,
    /// Description.
    pub description: String,
    /// Catalog permissions, sorted and unique.
    pub permissions: Vec<String>,
    /// Owning app.
    pub app_id: Option<String>,
    /// Requested expire time (checked against the org policy on creation).
    pub expire_time: Option<chrono::DateTime<chrono::Utc>>,
    /// Networks it may be used from (canonical, sorted); empty: any.
    pub allowed_cidrs: Vec<String>,
    /// Rate limit; `None`: none.
    pub rate_limit: Option<domain::RateLimit>,
}

/// Changes of [`Keys::update`], validated: `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    /// New display name.
    pub display_name: Option<DisplayName>,
    /// New description.
    pub description: Option<String>,
    /// New permission set (catalog permissions, sorted and unique).
    pub permissions: Option<Vec<String>>,
    /// New expire time (`Some(None)`: never), checked against the org policy.
    pub expire_time: Option<Option<chrono::DateTime<chrono::Utc>>>,
    /// New networks (canonical, sorted; empty: any).
    pub allowed_cidrs: Option<Vec<String>>,
    /// New rate limit (`Some(None)`: none).
    pub rate_limit: Option<Option<domain::RateLimit>>,
}

/// Guards of a mutation.
#[derive(Debug, Clone, Default)]
pub struct Precondition {
    /// Expected etag; empty for none.
    pub etag: String,
    /// Whether the caller accepts that an app-managed key's app may break.
    pub acknowledge_app_impact: bool,
}

/// The key lifecycle; see the module docs.
#[derive(Debug)]
pub struct Keys {
    store: Store,
    hasher: Arc<Hasher>,
    cache: Arc<VerifiedCache>,
    failures: Arc<FailureLog>,
    catalog: Arc<Catalog>,
    changed: Arc<Notify>,
    undelete_window: Duration,
    pause_before_invalidation_ms: AtomicU64,
}

/// Whether a mutation applies to a live key or a deleted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A live key; a deleted one is FAILED_PRECONDITION (undelete it first).
    Live,
    /// A live key; a deleted one is NOT_FOUND (deleting it again).
    LiveOnly,
    /// A deleted key before its purge time; a live one is FAILED_PRECONDITION.
    Deleted,
}

impl Target {
    /// Checks that `key` is what the mutation applies to at `now`.
    fn check(self, key: &ApiKey, now: chrono::DateTime<chrono::Utc>) -> Result<()> {
        let id = || key.id.to_string();
        match (self, key.delete_time.is_some()) {
            (Self::Live | Self::LiveOnly, false) => Ok(()),
            (Self::Live, true) => Err(Error::KeyDeleted(id())),
            (Self::LiveOnly, true) => Err(Error::KeyNotFound(id())),
            (Self::Deleted, false) => Err(Error::KeyNotDeleted(id())),
            // Due for purging: as good as gone.
            (Self::Deleted, true) if key.purge_time.is_some_and(|at| at <= now) => Err(Error::KeyNotFound(id())),
            (Self::Deleted, true) => Ok(()),
        }
    }
}

/// When keys get their expiry warnings: the first within `first` of their expire time, the last
/// within `last` (zero: none).
#[derive(Debug, Clone, Copy)]
pub struct ExpiryWarnings {
    /// The first warning (the key entered its last days).
    pub first: Duration,
    /// The last warning (the key entered its last day).
    pub last: Duration,
}

/// How long a deleted key can be restored before it is purged, unless configured otherwise.
pub const DEFAULT_UNDELETE_WINDOW: Duration = Duration::from_secs(30 * 24 * 60 * 60);

/// The longest undelete window allowed.
pub const MAX_UNDELETE_WINDOW: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Who purges deleted keys in the audit trail.
const PURGER: &str = "purge";

/// Keys purged per transaction.
const PURGE_BATCH: u64 = 500;

fn new_credential(id: KeyId) -> Result<Credential> {
    let secret = Secret::generate().map_err(|e| Error::internal(format!("OS random source: {e}")))?;
    Ok(Credential { key_id: id.0, secret })
}

impl Keys {
    /// The lifecycle over `store`, dropping a key's entries from `cache` whenever it changes (and
    /// notifying `changed`, so the change feed tells watchers at once), and its pending failure
    /// counts from `failures` when it is unlocked or given a new secret.
    pub fn new(
        store: Store,
        hasher: Arc<Hasher>,
        cache: Arc<VerifiedCache>,
        failures: Arc<FailureLog>,
        catalog: Arc<Catalog>,
        changed: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            hasher,
            cache,
            failures,
            catalog,
            changed,
            undelete_window: DEFAULT_UNDELETE_WINDOW,
            pause_before_invalidation_ms: AtomicU64::new(0),
        }
    }

    /// Deleted keys are restorable for `window` (default [`DEFAULT_UNDELETE_WINDOW`]), then purged.
    #[must_use]
    pub fn with_undelete_window(mut self, window: Duration) -> Self {
        self.undelete_window = window;
        self
    }

    /// Removes for good every deleted key whose purge time has come, in batches (the server calls
    /// this every `purge_interval_ms`). Returns how many were purged.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL; what was purged before the error stays purged.
    pub async fn purge_deleted(&self) -> Result<usize> {
        let actor = Actor::system(PURGER);
        let mut total = 0;
        loop {
            let purged = self.store.purge_deleted(chrono::Utc::now(), PURGE_BATCH, &actor).await?;
            for id in &purged {
                tracing::info!(key_id = %id, "deleted API key purged");
            }
            total += purged.len();
            if (purged.len() as u64) < PURGE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Writes the pending failure counts, locking keys that crossed their threshold (the server
    /// calls this every `failure_flush_ms` and on shutdown).
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL; the counts are kept for the next call.
    pub async fn flush_failures(&self) -> Result<Vec<KeyId>> {
        let locked = self.failures.flush(&self.store, &self.cache).await?;
        if !locked.is_empty() {
            self.changed.notify_one();
        }
        Ok(locked)
    }

    /// The policy of the caller's org.
    ///
    /// # Errors
    /// UNAVAILABLE.
    pub async fn org_policy(&self, caller: &Caller) -> Result<OrgPolicy> {
        self.store.org_policy(caller.org_id).await
    }

    /// Replaces the policy of the caller's org.
    ///
    /// # Errors
    /// UNAVAILABLE.
    pub async fn set_org_policy(
        &self,
        caller: &Caller,
        patch: impl FnOnce(OrgPolicy) -> OrgPolicy,
    ) -> Result<OrgPolicy> {
        let current = self.store.org_policy(caller.org_id).await?;
        let policy = self.store.set_org_policy(caller.org_id, patch(current)).await?;
        tracing::info!(
            org_id = %caller.org_id,
            lockout_threshold = policy.lockout_threshold,
            max_key_lifetime_secs = policy.max_key_lifetime.map(|max| max.as_secs()),
            actor = %caller.actor.id,
            "org policy updated"
        );
        Ok(policy)
    }

    /// Disables (`disabled`) or enables a key of the caller's org, keeping its secret; the caller
    /// must hold every permission of the key, and disabling an app-managed key needs the
    /// acknowledgement.
    ///
    /// # Errors
    /// PERMISSION_DENIED (key outranks the caller), NOT_FOUND, ABORTED (etag given and stale),
    /// FAILED_PRECONDITION (disabling an app-managed key without acknowledgement), UNAVAILABLE.
    pub async fn set_disabled(
        &self,
        caller: &Caller,
        id: KeyId,
        disabled: bool,
        guard: &Precondition,
    ) -> Result<ApiKey> {
        let acknowledged = guard.acknowledge_app_impact;
        let key = self
            .mutate(caller, id, &guard.etag, Target::Live, move |current| {
                if disabled {
                    current.check_app_impact(acknowledged, "disabling it")?;
                }
                Ok(Change::SetDisabled(disabled))
            })
            .await?;
        let action = if disabled { "API key disabled" } else { "API key enabled" };
        tracing::info!(key_id = %id, actor = %caller.actor.id, "{action}");
        Ok(key)
    }

    /// Unlocks a key of the caller's org, keeping its secret; the caller must hold every permission
    /// of the key.
    ///
    /// # Errors
    /// PERMISSION_DENIED (key outranks the caller), NOT_FOUND, ABORTED (etag given and stale),
    /// UNAVAILABLE.
    pub async fn unlock(&self, caller: &Caller, id: KeyId, guard: &Precondition) -> Result<ApiKey> {
        let key = self.mutate(caller, id, &guard.etag, Target::Live, |_| Ok(Change::Unlock)).await?;
        self.failures.forget(id);
        tracing::info!(key_id = %id, actor = %caller.actor.id, "API key unlocked");
        Ok(key)
    }

    /// A page of the audit trail of the caller's org, newest first.
    ///
    /// # Errors
    /// UNAVAILABLE.
    pub async fn audit_events(
        &self,
        caller: &Caller,
        query: &AuditQuery,
    ) -> Result<Vec<crate::store::entities::audit_event::Model>> {
        self.store.list_audit_events(caller.org_id, query).await
    }

    /// Up to `limit` audit events of the caller's org after position `since` (time, then ID),
    /// oldest first.
    ///
    /// # Errors
    /// UNAVAILABLE.
    pub async fn audit_events_since(
        &self,
        caller: &Caller,
        since: (chrono::DateTime<chrono::Utc>, Uuid),
        limit: u64,
    ) -> Result<Vec<crate::store::entities::audit_event::Model>> {
        self.store.audit_events_since(caller.org_id, since, limit).await
    }

    /// Checks that the caller's key still authenticates and still holds the admin permission, or
    /// that a person's JWT has not expired (for long-lived admin streams, authorised once when they
    /// opened).
    ///
    /// # Errors
    /// UNAUTHENTICATED (the key is gone, deleted, disabled, locked or expired), PERMISSION_DENIED
    /// (no longer an admin), UNAVAILABLE.
    pub async fn check_still_admin(&self, caller: &Caller) -> Result<()> {
        // A person's JWT is not stored: it holds until it expires, with the permissions it carried.
        if caller.actor.kind == domain::ActorType::User {
            return match caller.expire_time {
                Some(at) if at > chrono::Utc::now() => Ok(()),
                _ => Err(Error::Unauthenticated),
            };
        }
        let id: Uuid = caller.actor.id.parse().map_err(|_| Error::Unauthenticated)?;
        let key = match self.store.get_key(caller.org_id, KeyId(id)).await {
            Ok(key) => key,
            Err(Error::KeyNotFound(_)) => return Err(Error::Unauthenticated),
            Err(error) => return Err(error),
        };
        if key.state(chrono::Utc::now()) != domain::KeyState::Active {
            return Err(Error::Unauthenticated);
        }
        let missing = crate::auth::lacking(&key.permissions, [domain::ADMIN_PERMISSION]);
        if missing.is_empty() { Ok(()) } else { Err(Error::MissingPermissions(missing)) }
    }

    /// Writes the expiry warnings that are due ([`ExpiryWarnings`]): the last one for keys within
    /// `last` of their expiry, the first for keys within `first` (a key already within `last`
    /// gets only the last). Returns how many were written.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn warn_expiring(&self, warnings: ExpiryWarnings) -> Result<usize> {
        let actor = Actor::system("expiry");
        let now = chrono::Utc::now();
        let within = |window: Duration| chrono::Duration::from_std(window).map(|w| now + w).map_err(Error::internal);
        let last_from = within(warnings.last)?;
        let mut total = 0;
        // A key already in its last day gets only the last warning: the first covers only keys
        // expiring after that day, so one created while this sweep runs cannot get both.
        for (window, level, action, after) in
            [(warnings.last, 2, "EXPIRY_LAST_WARNING", now), (warnings.first, 1, "EXPIRY_WARNING", last_from)]
        {
            if window.is_zero() {
                continue;
            }
            let warned = self.store.warn_expiring(after, within(window)?, level, action, &actor).await?;
            for id in &warned {
                tracing::info!(key_id = %id, action, "API key expires soon");
            }
            total += warned.len();
        }
        Ok(total)
    }

    /// Removes audit events older than `retention`, in batches; returns how many.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL; what was removed before the error stays removed.
    pub async fn prune_audit_events(&self, retention: Duration) -> Result<u64> {
        let retention = chrono::Duration::from_std(retention).map_err(Error::internal)?;
        let before = chrono::Utc::now() - retention;
        let mut total = 0;
        loop {
            let removed = self.store.prune_audit_events(before, PURGE_BATCH).await?;
            total += removed;
            if removed < PURGE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Which of the permissions of a key of the caller's org were exercised at or after `since`:
    /// the key, and the exercised ones it still holds.
    ///
    /// # Errors
    /// NOT_FOUND, UNAVAILABLE.
    pub async fn permission_usage(
        &self,
        caller: &Caller,
        id: KeyId,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<(ApiKey, Vec<String>)> {
        let key = self.store.get_key(caller.org_id, id).await?;
        let exercised = self.store.exercised_permissions(id, since).await?;
        let held: Vec<String> = exercised
            .into_iter()
            .map(|(permission, _)| permission)
            .filter(|permission| key.permissions.binary_search(permission).is_ok())
            .collect();
        Ok((key, held))
    }

    /// Splits reported uses into those of keys of the caller's org (deleted ones included: a
    /// report can arrive after a delete) and the number of the others: unknown keys, other orgs,
    /// and keys that administer apikeys or report themselves (their last use is what apikeys saw,
    /// which a reporter must not be able to paper over).
    ///
    /// # Errors
    /// UNAVAILABLE.
    pub async fn own_keys(
        &self,
        caller: &Caller,
        reports: Vec<(Uuid, crate::usage::Seen)>,
    ) -> Result<(Vec<(Uuid, crate::usage::Seen)>, usize)> {
        let ids: Vec<Uuid> = reports.iter().map(|(id, _)| *id).collect();
        let excluded = [domain::ADMIN_PERMISSION, domain::USAGE_REPORT_PERMISSION];
        let own = self.store.keys_of_org(caller.org_id, &ids, &excluded).await?;
        let total = reports.len();
        let own: Vec<_> = reports.into_iter().filter(|(id, _)| own.contains(id)).collect();
        let ignored = total - own.len();
        Ok((own, ignored))
    }

    /// The permission catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Creates a key in the caller's org.
    ///
    /// # Errors
    /// PERMISSION_DENIED (escalation), ALREADY_EXISTS, RESOURCE_EXHAUSTED, UNAVAILABLE.
    pub async fn create(&self, caller: &Caller, input: CreateKey) -> Result<Issued> {
        domain::check_grant(caller, &input.permissions)?;
        let policy = self.store.org_policy(caller.org_id).await?;
        let expire_time = policy.expire_time(input.expire_time, chrono::Utc::now(), "expire_time", true)?;
        let id = KeyId(Uuid::new_v4());
        let credential = new_credential(id)?;
        let secret_hash = self.hasher.hash(&credential.secret).await?;
        let key = self
            .store
            .create_key(NewKey {
                id,
                org_id: caller.org_id,
                display_name: input.display_name,
                description: input.description,
                permissions: input.permissions,
                app_id: input.app_id,
                secret_hash,
                expire_time,
                allowed_cidrs: input.allowed_cidrs,
                rate_limit: input.rate_limit,
                actor: caller.actor.clone(),
                origin: caller.origin.clone(),
            })
            .await?;
        tracing::info!(key_id = %key.id, org_id = %key.org_id, actor = %caller.actor.id, "API key created");
        Ok(Issued { key, credential })
    }

    /// A key of the caller's org.
    ///
    /// # Errors
    /// NOT_FOUND, UNAVAILABLE.
    pub async fn get(&self, caller: &Caller, id: KeyId) -> Result<ApiKey> {
        self.store.get_key(caller.org_id, id).await
    }

    /// Up to `query.limit` keys of the caller's org in (name key, id) order after `query.after`, each
    /// with its name key (a next page starts after the last one's (name key, id)).
    ///
    /// # Errors
    /// UNAVAILABLE.
    pub async fn list(&self, caller: &Caller, query: &ListQuery) -> Result<Vec<(ApiKey, String)>> {
        self.store.list_keys(caller.org_id, query).await
    }

    /// Changes key `id` of the caller's org through [`Store::mutate`]: `decide` sees the locked,
    /// current key after the target (live or deleted), the etag and the management rule passed.
    ///
    /// The change runs on a task of its own, and that task drops the key's cached verifications
    /// once the transaction has ended, whatever happens to the caller: a client that cancels or
    /// times out after the commit cannot leave a revoked credential in the cache.
    async fn mutate(
        &self,
        caller: &Caller,
        id: KeyId,
        etag: &str,
        target: Target,
        decide: impl FnOnce(&ApiKey) -> Result<Change> + Send + 'static,
    ) -> Result<ApiKey> {
        let (store, cache, changed) = (self.store.clone(), self.cache.clone(), self.changed.clone());
        let (caller, etag) = (caller.clone(), etag.to_owned());
        let pause = Duration::from_millis(self.pause_before_invalidation_ms.load(Ordering::Relaxed));
        // The caller's deadline caps the wait for a connection here too.
        let deadline = crate::deadline::current();
        let task = tokio::spawn(async move {
            let mutation = store.mutate(caller.org_id, id, (&caller.actor, &caller.origin), |current| {
                target.check(current, chrono::Utc::now())?;
                current.check_etag(&etag)?;
                domain::check_manage(&caller, current)?;
                decide(current)
            });
            let result = crate::deadline::within(deadline, mutation).await;
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            // Whatever the outcome: an error after the commit must not leave a stale entry.
            cache.invalidate(id.0);
            changed.notify_one();
            result
        });
        task.await.map_err(|e| Error::internal(format!("mutation task failed: {e}")))?
    }

    /// Makes every later mutation wait `pause` between its transaction and the cache invalidation.
    /// Only for tests that cancel a call in that window; never set in production.
    #[doc(hidden)]
    pub fn pause_before_invalidation_for_tests(&self, pause: Duration) {
        let millis = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX);
        self.pause_before_invalidation_ms.store(millis, Ordering::Relaxed);
    }

    /// Applies `patch` to a key of the caller's org. The caller must hold every permission of the key
    /// (else a weaker admin could rename or re-describe a stronger key) and every permission it adds.
    ///
    /// # Errors
    /// PERMISSION_DENIED (escalation), NOT_FOUND, ALREADY_EXISTS, ABORTED (etag given and stale),
    /// FAILED_PRECONDITION (permissions of an app-managed key without acknowledgement), UNAVAILABLE.
    pub async fn update(&self, caller: &Caller, id: KeyId, patch: KeyPatch, guard: &Precondition) -> Result<ApiKey> {
        let acknowledged = guard.acknowledge_app_impact;
        let grantor = caller.clone();
        // The expiry is checked against the policy here; the transaction applies what was checked.
        let expire_time = match patch.expire_time {
            Some(requested) => {
                let policy = self.store.org_policy(caller.org_id).await?;
                Some(policy.expire_time(requested, chrono::Utc::now(), "api_key.expire_time", false)?)
            }
            None => None,
        };
        let updated = self
            .mutate(caller, id, &guard.etag, Target::Live, move |current| {
                if let Some(new) = &patch.permissions
                    && new != &current.permissions
                {
                    domain::check_permission_change(&grantor, current, new)?;
                    current.check_app_impact(acknowledged, "changing its permissions")?;
                }
                if patch.allowed_cidrs.as_ref().is_some_and(|new| new != &current.allowed_cidrs) {
                    current.check_app_impact(acknowledged, "changing the networks it may be used from")?;
                }
                if patch.rate_limit.is_some_and(|new| new != current.rate_limit) {
                    current.check_app_impact(acknowledged, "changing its rate limit")?;
                }
                Ok(Change::Update(KeyChanges {
                    display_name: patch.display_name,
                    description: patch.description,
                    permissions: patch.permissions,
                    expire_time,
                    allowed_cidrs: patch.allowed_cidrs,
                    rate_limit: patch.rate_limit,
                }))
            })
            .await?;
        tracing::info!(key_id = %updated.id, actor = %caller.actor.id, "API key updated");
        Ok(updated)
    }

    /// Gives a key of the caller's org a new secret; the old one stops working at once, or after
    /// `previous_secret_ttl` (a grace period, which ends any earlier one). The caller must hold
    /// every permission of the key (else it could take over a stronger key).
    ///
    /// # Errors
    /// PERMISSION_DENIED (key outranks the caller), NOT_FOUND, ABORTED (etag given and stale),
    /// FAILED_PRECONDITION (app-managed), RESOURCE_EXHAUSTED, UNAVAILABLE.
    pub async fn regenerate(
        &self,
        caller: &Caller,
        id: KeyId,
        guard: &Precondition,
        previous_secret_ttl: Option<Duration>,
    ) -> Result<Issued> {
        // Fail early, before the argon2 work, when the answer is already known; the transaction
        // checks again on the locked row.
        let current = self.store.get_key(caller.org_id, id).await?;
        Target::Live.check(&current, chrono::Utc::now())?;
        current.check_etag(&guard.etag)?;
        domain::check_manage(caller, &current)?;
        current.check_app_impact(guard.acknowledge_app_impact, "regenerating its secret")?;
        let credential = new_credential(id)?;
        let secret_hash = self.hasher.hash(&credential.secret).await?;
        let acknowledged = guard.acknowledge_app_impact;
        let key = self
            .mutate(caller, id, &guard.etag, Target::Live, move |current| {
                current.check_app_impact(acknowledged, "regenerating its secret")?;
                let keep_until = previous_secret_ttl
                    .and_then(|ttl| chrono::Duration::from_std(ttl).ok())
                    .map(|ttl| chrono::Utc::now() + ttl);
                Ok(Change::ReplaceSecret(secret_hash, keep_until))
            })
            .await?;
        self.failures.forget(id);
        tracing::info!(key_id = %key.id, actor = %caller.actor.id, "API key secret regenerated");
        Ok(Issued { key, credential })
    }

    /// Deletes a key of the caller's org: it stops working at once, its name can be reused, and it
    /// can be restored until its purge time (the undelete window from now). The caller must hold
    /// every permission of the key.
    ///
    /// # Errors
    /// PERMISSION_DENIED (key outranks the caller), NOT_FOUND (also already deleted), ABORTED (etag
    /// given and stale), FAILED_PRECONDITION (app-managed), UNAVAILABLE.
    pub async fn delete(&self, caller: &Caller, id: KeyId, guard: &Precondition) -> Result<ApiKey> {
        let acknowledged = guard.acknowledge_app_impact;
        let purge_time = chrono::Utc::now()
            + chrono::Duration::from_std(self.undelete_window)
                .map_err(|e| Error::internal(format!("undelete window: {e}")))?;
        let key = self
            .mutate(caller, id, &guard.etag, Target::LiveOnly, move |current| {
                current.check_app_impact(acknowledged, "deleting it")?;
                Ok(Change::Delete(purge_time))
            })
            .await?;
        tracing::info!(key_id = %id, actor = %caller.actor.id, %purge_time, "API key deleted");
        Ok(key)
    }

    /// Restores a deleted key of the caller's org before its purge time, with its secret and the
    /// state it had. The caller must hold every permission of the key.
    ///
    /// # Errors
    /// PERMISSION_DENIED (key outranks the caller), NOT_FOUND (also purged or due), ABORTED (etag
    /// given and stale), FAILED_PRECONDITION (not deleted), ALREADY_EXISTS (its name is taken,
    /// naming the holder), UNAVAILABLE.
    pub async fn undelete(&self, caller: &Caller, id: KeyId, guard: &Precondition) -> Result<ApiKey> {
        let key = self.mutate(caller, id, &guard.etag, Target::Deleted, |_| Ok(Change::Undelete)).await?;
        tracing::info!(key_id = %id, actor = %caller.actor.id, "API key undeleted");
        Ok(key)
    }

    /// Creates org `org_name` with a first administrator key holding every permission of the
    /// catalog. `before_commit` receives the credential before the transaction begins (the server
    /// stages the bootstrap token file there), so a failure to save it leaves nothing half-done.
    ///
    /// # Errors
    /// FAILED_PRECONDITION ([`Error::OrgExists`]), INVALID_ARGUMENT (org name), UNAVAILABLE, or what
    /// `before_commit` returns.
    pub async fn create_org_admin(
        &self,
        org_name: &str,
        default_group: &str,
        before_commit: impl FnOnce(&Credential) -> Result<()>,
    ) -> Result<(Org, Issued)> {
        let org = domain::display_name(org_name, "org").map_err(|v| Error::InvalidArgument(vec![v]))?;
        let credential = new_credential(KeyId(Uuid::new_v4()))?;
        let secret_hash = self.hasher.hash(&credential.secret).await?;
        let name =
            domain::display_name("Administrator", "display_name").map_err(|v| Error::InvalidArgument(vec![v]))?;
        let new_key = NewKey {
            id: credential.key_id.into(),
            org_id: OrgId(Uuid::new_v4()),
            display_name: name,
            description: format!("First administrator of org {:?}, created by bootstrap.", org.shown),
            permissions: self.catalog.all_names(),
            app_id: None,
            secret_hash,
            expire_time: None,
            allowed_cidrs: Vec::new(),
            rate_limit: None,
            actor: Actor::system("bootstrap"),
            origin: domain::Origin::default(),
        };
        before_commit(&credential)?;
        let (org, key) = self.store.create_org_with_key(&org.shown, default_group, new_key).await?;
        tracing::info!(org = %org.name, key_id = %key.id, "organization bootstrapped");
        Ok((org, Issued { key, credential }))
    }
}
