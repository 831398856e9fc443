//! The API key lifecycle: create, read, list, update, regenerate, delete, and bootstrap. Validates
//! input with the domain rules, enforces the escalation and app-impact rules, persists through the
//! store, and invalidates cached verifications after every change (even when the caller is gone).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use base64::Engine as _;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    auth::{Credential, Secret, cache::VerifiedCache, hashing::Hasher},
    domain::{self, Actor, ApiKey, Caller, Catalog, Violations},
    error::{Error, Result},
    store::{Change, KeyChanges, ListQuery, NewKey, Org, SecretHash, Store},
};

/// Page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// Largest page size; larger requests are clamped.
pub const MAX_PAGE_SIZE: u64 = 1000;

/// A key with its freshly generated credential (shown once).
#[derive(Debug)]
pub struct Issued {
    /// The key.
    pub key: ApiKey,
    /// Its credential.
    pub credential: Credential,
}

/// Input of [`Keys::create`], unvalidated.
#[derive(Debug, Clone, Default)]
pub struct CreateKey {
    /// Display name.
    pub display_name: String,
    /// Description.
    pub description: String,
    /// Permission names.
    pub permissions: Vec<String>,
    /// Owning app (empty: none).
    pub app_id: String,
}

/// Input of [`Keys::list`], unvalidated.
#[derive(Debug, Clone, Default)]
pub struct ListKeys {
    /// 0: default; above max: clamped; negative: INVALID_ARGUMENT.
    pub page_size: i32,
    /// From a previous page.
    pub page_token: String,
    /// Substring of the display name, ignoring case.
    pub name_contains: String,
    /// Owning app.
    pub app_id: String,
    /// Held permission.
    pub permission: String,
}

/// Input of [`Keys::update`]: `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct KeyPatch {
    /// New display name.
    pub display_name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New permission set.
    pub permissions: Option<Vec<String>>,
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
    catalog: Arc<Catalog>,
    pause_before_invalidation_ms: AtomicU64,
}

fn parse_id(raw: &str, field: &str) -> Result<Uuid> {
    Uuid::try_parse(raw.trim()).map_err(|_| Error::invalid(field, "must be a UUID"))
}

fn new_credential(id: Uuid) -> Result<Credential> {
    let secret = Secret::generate().map_err(|e| Error::internal(format!("OS random source: {e}")))?;
    Ok(Credential { key_id: id, secret })
}

/// Opaque page token: where the previous page ended and a fingerprint of the filters it was for.
#[derive(serde::Serialize, serde::Deserialize)]
struct PageToken {
    k: String,
    i: Uuid,
    f: String,
}

fn filter_fingerprint(query: &ListQuery) -> String {
    let mut hasher = Sha256::new();
    for part in [&query.name_contains, &query.app_id, &query.permission] {
        hasher.update(part.as_deref().unwrap_or("\u{0}").as_bytes());
        hasher.update([0xff]);
    }
    hex8(&hasher.finalize())
}

fn hex8(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Keys {
    /// The lifecycle over `store`, dropping a key's entries from `cache` whenever it changes.
    pub fn new(store: Store, hasher: Arc<Hasher>, cache: Arc<VerifiedCache>, catalog: Arc<Catalog>) -> Self {
        Self { store, hasher, cache, catalog, pause_before_invalidation_ms: AtomicU64::new(0) }
    }

    /// The permission catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Creates a key in the caller's org.
    ///
    /// # Errors
    /// INVALID_ARGUMENT, PERMISSION_DENIED (escalation), ALREADY_EXISTS, RESOURCE_EXHAUSTED,
    /// UNAVAILABLE.
    pub async fn create(&self, caller: &Caller, input: CreateKey) -> Result<Issued> {
        let mut v = Violations::default();
        let name = v.check(domain::display_name(&input.display_name, "display_name"));
        let description = v.check(domain::description(&input.description, "description"));
        let permissions = v.check_all(domain::permissions(&self.catalog, &input.permissions, "permissions"));
        let app_id = v.check(domain::app_id(&input.app_id, "app_id"));
        v.finish()?;
        let (Some(name), Some(description), Some(permissions), Some(app_id)) = (name, description, permissions, app_id)
        else {
            return Err(Error::internal("validation passed without values"));
        };
        domain::check_grant(caller, &permissions)?;
        let credential = new_credential(Uuid::new_v4())?;
        let secret_hash = self.hasher.hash(&credential.secret).await?;
        let key = self
            .store
            .create_key(NewKey {
                id: credential.key_id,
                org_id: caller.org_id,
                display_name: name.shown,
                display_name_key: name.key,
                description,
                permissions,
                app_id,
                secret_hash,
                actor: caller.actor.clone(),
            })
            .await?;
        tracing::info!(key_id = %key.id, org_id = %key.org_id, "API key created");
        Ok(Issued { key, credential })
    }

    /// A key of the caller's org.
    ///
    /// # Errors
    /// INVALID_ARGUMENT (id), NOT_FOUND, UNAVAILABLE.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<ApiKey> {
        self.store.get_key(caller.org_id, parse_id(id, "id")?).await
    }

    /// A page of the caller's org's keys and the token of the next page (empty at the end).
    ///
    /// # Errors
    /// INVALID_ARGUMENT (page_size, page_token, filters), UNAVAILABLE.
    pub async fn list(&self, caller: &Caller, input: ListKeys) -> Result<(Vec<ApiKey>, String)> {
        let mut v = Violations::default();
        if input.page_size < 0 {
            v.add("page_size", "must not be negative");
        }
        let page_size = match u64::try_from(input.page_size).unwrap_or(0) {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
        let permission = non_empty(&input.permission);
        if let Some(p) = &permission
            && !self.catalog.contains(p)
        {
            v.add("permission", format!("unknown permission {p:?}"));
        }
        for (field, value) in [("name_contains", &input.name_contains), ("app_id", &input.app_id)] {
            if value.chars().any(char::is_control) {
                v.add(field, "must not contain control characters");
            }
        }
        if input.name_contains.chars().count() > domain::MAX_DISPLAY_NAME_CHARS {
            v.add("name_contains", "is longer than any display name");
        }
        let mut query = ListQuery {
            name_contains: non_empty(&input.name_contains).map(|s| domain::name_key(&s)),
            app_id: non_empty(&input.app_id),
            permission,
            after: None,
            limit: page_size + 1,
        };
        let fingerprint = filter_fingerprint(&query);
        if !input.page_token.is_empty() {
            match Self::decode_token(&input.page_token) {
                Some(token) if token.f == fingerprint => query.after = Some((token.k, token.i)),
                Some(_) => v.add("page_token", "was issued for different filters"),
                None => v.add("page_token", "is malformed"),
            }
        }
        v.finish()?;
        let mut rows = self.store.list_keys(caller.org_id, &query).await?;
        let more = rows.len() as u64 > page_size;
        rows.truncate(usize::try_from(page_size).unwrap_or(usize::MAX));
        let next = match rows.last() {
            Some((key, name_key)) if more => {
                Self::encode_token(&PageToken { k: name_key.clone(), i: key.id, f: fingerprint })?
            }
            _ => String::new(),
        };
        Ok((rows.into_iter().map(|(key, _)| key).collect(), next))
    }

    fn encode_token(token: &PageToken) -> Result<String> {
        let json = serde_json::to_vec(token).map_err(Error::internal)?;
        Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
    }

    fn decode_token(text: &str) -> Option<PageToken> {
        if text.len() > 2048 {
            return None;
        }
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()?;
        let token: PageToken = serde_json::from_slice(&json).ok()?;
        // The position goes into a query: refuse what no display name can contain.
        (!token.k.chars().any(char::is_control) && token.k.chars().count() <= domain::MAX_DISPLAY_NAME_CHARS)
            .then_some(token)
    }

    /// Changes key `id` of the caller's org through [`Store::mutate`]: `decide` sees the locked,
    /// current key after the etag and the management rule passed.
    ///
    /// The change runs on a task of its own, and that task drops the key's cached verifications
    /// once the transaction has ended, whatever happens to the caller: a client that cancels or
    /// times out after the commit cannot leave a revoked credential in the cache.
    async fn mutate(
        &self,
        caller: &Caller,
        id: Uuid,
        etag: &str,
        decide: impl FnOnce(&ApiKey) -> Result<Change> + Send + 'static,
    ) -> Result<Option<ApiKey>> {
        let (store, cache) = (self.store.clone(), self.cache.clone());
        let (caller, etag) = (caller.clone(), etag.to_owned());
        let pause = Duration::from_millis(self.pause_before_invalidation_ms.load(Ordering::Relaxed));
        let task = tokio::spawn(async move {
            let result = store
                .mutate(caller.org_id, id, &caller.actor, |current| {
                    current.check_etag(&etag)?;
                    domain::check_manage(&caller, current)?;
                    decide(current)
                })
                .await;
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            // Whatever the outcome: an error after the commit must not leave a stale entry.
            cache.invalidate(id);
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
    /// INVALID_ARGUMENT, PERMISSION_DENIED (escalation), NOT_FOUND, ALREADY_EXISTS, ABORTED (etag
    /// given and stale), FAILED_PRECONDITION (permissions of an app-managed key without
    /// acknowledgement), UNAVAILABLE.
    pub async fn update(&self, caller: &Caller, id: &str, patch: KeyPatch, guard: &Precondition) -> Result<ApiKey> {
        let id = parse_id(id, "api_key.id")?;
        let mut v = Violations::default();
        let display_name = patch
            .display_name
            .as_deref()
            .and_then(|n| v.check(domain::display_name(n, "api_key.display_name")))
            .map(|n| (n.shown, n.key));
        let description =
            patch.description.as_deref().and_then(|d| v.check(domain::description(d, "api_key.description")));
        let permissions = patch
            .permissions
            .as_deref()
            .and_then(|p| v.check_all(domain::permissions(&self.catalog, p, "api_key.permissions")));
        v.finish()?;
        let acknowledged = guard.acknowledge_app_impact;
        let grantor = caller.clone();
        let updated = self
            .mutate(caller, id, &guard.etag, move |current| {
                if let Some(new) = &permissions
                    && new != &current.permissions
                {
                    domain::check_permission_change(&grantor, current, new)?;
                    current.check_app_impact(acknowledged, "changing its permissions")?;
                }
                Ok(Change::Update(KeyChanges { display_name, description, permissions }))
            })
            .await?
            .ok_or_else(|| Error::internal("updated key vanished in its own transaction"))?;
        tracing::info!(key_id = %updated.id, "API key updated");
        Ok(updated)
    }

    /// Gives a key of the caller's org a new secret; the old one stops working at once. The caller
    /// must hold every permission of the key (else it could take over a stronger key).
    ///
    /// # Errors
    /// INVALID_ARGUMENT, PERMISSION_DENIED (key outranks the caller), NOT_FOUND, ABORTED (etag given
    /// and stale), FAILED_PRECONDITION (app-managed), RESOURCE_EXHAUSTED, UNAVAILABLE.
    pub async fn regenerate(&self, caller: &Caller, id: &str, guard: &Precondition) -> Result<Issued> {
        let id = parse_id(id, "id")?;
        // Fail early, before the argon2 work, when the answer is already known; the transaction
        // checks again on the locked row.
        let current = self.store.get_key(caller.org_id, id).await?;
        current.check_etag(&guard.etag)?;
        domain::check_manage(caller, &current)?;
        current.check_app_impact(guard.acknowledge_app_impact, "regenerating its secret")?;
        let credential = new_credential(id)?;
        let secret_hash = SecretHash(self.hasher.hash(&credential.secret).await?);
        let acknowledged = guard.acknowledge_app_impact;
        let key = self
            .mutate(caller, id, &guard.etag, move |current| {
                current.check_app_impact(acknowledged, "regenerating its secret")?;
                Ok(Change::ReplaceSecret(secret_hash))
            })
            .await?
            .ok_or_else(|| Error::internal("regenerated key vanished in its own transaction"))?;
        tracing::info!(key_id = %key.id, "API key secret regenerated");
        Ok(Issued { key, credential })
    }

    /// Deletes a key of the caller's org; it stops working at once and its name can be reused. The
    /// caller must hold every permission of the key.
    ///
    /// # Errors
    /// INVALID_ARGUMENT, PERMISSION_DENIED (key outranks the caller), NOT_FOUND, ABORTED (etag given
    /// and stale), FAILED_PRECONDITION (app-managed), UNAVAILABLE.
    pub async fn delete(&self, caller: &Caller, id: &str, guard: &Precondition) -> Result<()> {
        let id = parse_id(id, "id")?;
        let acknowledged = guard.acknowledge_app_impact;
        self.mutate(caller, id, &guard.etag, move |current| {
            current.check_app_impact(acknowledged, "deleting it")?;
            Ok(Change::Delete)
        })
        .await?;
        tracing::info!(key_id = %id, "API key deleted");
        Ok(())
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
        let credential = new_credential(Uuid::new_v4())?;
        let secret_hash = self.hasher.hash(&credential.secret).await?;
        let name =
            domain::display_name("Administrator", "display_name").map_err(|v| Error::InvalidArgument(vec![v]))?;
        let new_key = NewKey {
            id: credential.key_id,
            org_id: Uuid::new_v4(),
            display_name: name.shown,
            display_name_key: name.key,
            description: format!("First administrator of org {:?}, created by bootstrap.", org.shown),
            permissions: self.catalog.all_names(),
            app_id: None,
            secret_hash,
            actor: Actor::system("bootstrap"),
        };
        before_commit(&credential)?;
        let (org, key) = self.store.create_org_with_key(&org.shown, default_group, new_key).await?;
        tracing::info!(org = %org.name, key_id = %key.id, "organization bootstrapped");
        Ok((org, Issued { key, credential }))
    }
}
