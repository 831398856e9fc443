//! `apikeys.v1.ApiKeyService`: thin handlers that parse the request at the edge ([`convert`]), call
//! the key lifecycle, and convert the answer back.
//! Authentication of admin RPCs happened before, in the auth layer; handlers read the principal from
//! the request extensions.

pub mod convert;
pub mod routes;

use std::{pin::Pin, sync::Arc};

use tonic::{Request, Response, Status};

use crate::{
    audit::AuditTail,
    auth::{cache::Answer, check_admission, check_permissions, local::LocalAuthenticator, restrictions::RateLimiter},
    keys::{Issued, Keys},
    metrics::Metrics,
    pb,
    revocation::{ChangeFeed, Update},
    usage::UsageLog,
};

/// The message stream of WatchAuditEvents.
pub type AuditStream = Pin<Box<dyn futures_util::Stream<Item = Result<pb::WatchAuditEventsResponse, Status>> + Send>>;

/// The message stream of WatchKeyChanges.
pub type ChangeStream = Pin<Box<dyn futures_util::Stream<Item = Result<pb::WatchKeyChangesResponse, Status>> + Send>>;

/// The gRPC service implementation.
#[derive(Debug, Clone)]
pub struct ApiKeyApi {
    keys: Arc<Keys>,
    authenticator: Arc<LocalAuthenticator>,
    feed: Arc<ChangeFeed>,
    metrics: Arc<Metrics>,
    limiter: Arc<RateLimiter>,
    usage: Arc<UsageLog>,
}

impl ApiKeyApi {
    /// The service over the key lifecycle, the in-process authenticator and the change feed,
    /// counting Authenticate outcomes in `metrics` and keys' rates in `limiter` (shared with the
    /// auth layer, so a key's admin calls and its Authenticate calls count against one limit),
    /// and every use of a key in `usage`.
    pub fn new(
        keys: Arc<Keys>,
        authenticator: Arc<LocalAuthenticator>,
        feed: Arc<ChangeFeed>,
        metrics: Arc<Metrics>,
        limiter: Arc<RateLimiter>,
        usage: Arc<UsageLog>,
    ) -> Self {
        Self { keys, authenticator, feed, metrics, limiter, usage }
    }

    /// The Authenticate RPC: the credential verified (from the cache, mostly), then the checks of
    /// the request (network, permissions, rate); the principal and its `AuthenticateResponse`
    /// encoding.
    ///
    /// # Errors
    /// INVALID_ARGUMENT (malformed request), UNAUTHENTICATED, PERMISSION_DENIED
    /// (`SOURCE_NOT_ALLOWED`, `MISSING_PERMISSIONS`), RESOURCE_EXHAUSTED (`RATE_LIMITED`,
    /// `HASHING_BUSY`, `TOO_MANY_FAILURES`), UNAVAILABLE.
    pub(crate) async fn answer(&self, request: Request<pb::AuthenticateRequest>) -> Result<Answer, Status> {
        // Failures are charged to the caller's address (its failure budget).
        let peer = request.remote_addr().map(|addr| addr.ip());
        let (metadata, _, message) = request.into_parts();
        let agent = convert::user_agent(&metadata);
        let result = match convert::authenticate(message) {
            Ok(check) => {
                let (required, client, key_id) = (check.required, check.client, check.credential.key_id);
                let admitted = self.authenticator.answer_from(check.credential, peer).await.and_then(|answer| {
                    // A caller that enforces the network and the rate itself (a consumer layer)
                    // gets the principal for any client; the permissions are always checked here.
                    if check.caller_enforces_restrictions {
                        check_permissions(&answer.principal, &required)?;
                    } else {
                        check_admission(&answer.principal, &required, client, Some(&self.limiter))?;
                    }
                    Ok(answer)
                });
                // Where the client is: as the caller reports it, else the caller itself; what it
                // needed of the key feeds the least-privilege report.
                if admitted.is_ok() {
                    self.usage.used(key_id, client.or(peer), agent, &required);
                }
                admitted
            }
            Err(error) => Err(error),
        };
        // Counted here, where the outcome is known.
        self.metrics.observe_authenticate(result.as_ref().map_or_else(|e| e.reason(), |_| "OK"));
        Ok(result?)
    }
}

impl From<Update> for pb::WatchKeyChangesResponse {
    fn from(update: Update) -> Self {
        Self {
            cursor: update.cursor.to_string(),
            key_digests: update.changes.iter().map(|c| c.digest.to_vec()).collect(),
            reset: update.reset,
        }
    }
}

fn issued(issued: Issued) -> (Option<pb::ApiKey>, String, String) {
    let token = issued.credential.token();
    let secret = issued.credential.secret.expose_text();
    (Some(issued.key.into()), secret, token)
}

#[tonic::async_trait]
impl pb::api_key_service_server::ApiKeyService for ApiKeyApi {
    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let caller = convert::caller(&request)?;
        let input = convert::create(request.into_inner(), self.keys.catalog())?;
        let (api_key, secret, token) = issued(self.keys.create(&caller, input).await?);
        Ok(Response::new(pb::CreateApiKeyResponse { api_key, secret, token }))
    }

    async fn get_api_key(
        &self,
        request: Request<pb::GetApiKeyRequest>,
    ) -> Result<Response<pb::GetApiKeyResponse>, Status> {
        let caller = convert::caller(&request)?;
        let key = self.keys.get(&caller, convert::key_id(&request.get_ref().id, "id")?).await?;
        Ok(Response::new(pb::GetApiKeyResponse { api_key: Some(key.into()) }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let caller = convert::caller(&request)?;
        let page = convert::list(request.into_inner(), self.keys.catalog())?;
        let rows = self.keys.list(&caller, &page.query).await?;
        Ok(Response::new(page.response(rows)?))
    }

    async fn update_api_key(
        &self,
        request: Request<pb::UpdateApiKeyRequest>,
    ) -> Result<Response<pb::UpdateApiKeyResponse>, Status> {
        let caller = convert::caller(&request)?;
        let (id, patch, guard) = convert::update(request.into_inner(), self.keys.catalog())?;
        let key = self.keys.update(&caller, id, patch, &guard).await?;
        Ok(Response::new(pb::UpdateApiKeyResponse { api_key: Some(key.into()) }))
    }

    async fn regenerate_api_key_secret(
        &self,
        request: Request<pb::RegenerateApiKeySecretRequest>,
    ) -> Result<Response<pb::RegenerateApiKeySecretResponse>, Status> {
        let caller = convert::caller(&request)?;
        let r = request.into_inner();
        let ttl = convert::previous_secret_ttl(r.previous_secret_ttl.as_ref())?;
        let guard = convert::precondition(r.etag, r.acknowledge_app_impact);
        let (api_key, secret, token) =
            issued(self.keys.regenerate(&caller, convert::key_id(&r.id, "id")?, &guard, ttl).await?);
        Ok(Response::new(pb::RegenerateApiKeySecretResponse { api_key, secret, token }))
    }

    async fn delete_api_key(
        &self,
        request: Request<pb::DeleteApiKeyRequest>,
    ) -> Result<Response<pb::DeleteApiKeyResponse>, Status> {
        let caller = convert::caller(&request)?;
        let r = request.into_inner();
        let guard = convert::precondition(r.etag, r.acknowledge_app_impact);
        let key = self.keys.delete(&caller, convert::key_id(&r.id, "id")?, &guard).await?;
        Ok(Response::new(pb::DeleteApiKeyResponse { api_key: Some(key.into()) }))
    }

    async fn undelete_api_key(
        &self,
        request: Request<pb::UndeleteApiKeyRequest>,
    ) -> Result<Response<pb::UndeleteApiKeyResponse>, Status> {
        let caller = convert::caller(&request)?;
        let r = request.into_inner();
        let guard = convert::precondition(r.etag, false);
        let key = self.keys.undelete(&caller, convert::key_id(&r.id, "id")?, &guard).await?;
        Ok(Response::new(pb::UndeleteApiKeyResponse { api_key: Some(key.into()) }))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        // The gRPC server answers with the encoding ([`routes`]); this is the console's way in.
        let answer = self.answer(request).await?;
        Ok(Response::new(pb::AuthenticateResponse { principal: Some((*answer.principal).clone()) }))
    }

    async fn unlock_api_key(
        &self,
        request: Request<pb::UnlockApiKeyRequest>,
    ) -> Result<Response<pb::UnlockApiKeyResponse>, Status> {
        let caller = convert::caller(&request)?;
        let r = request.into_inner();
        let guard = convert::precondition(r.etag, false);
        let key = self.keys.unlock(&caller, convert::key_id(&r.id, "id")?, &guard).await?;
        Ok(Response::new(pb::UnlockApiKeyResponse { api_key: Some(key.into()) }))
    }

    async fn disable_api_key(
        &self,
        request: Request<pb::DisableApiKeyRequest>,
    ) -> Result<Response<pb::DisableApiKeyResponse>, Status> {
        let caller = convert::caller(&request)?;
        let r = request.into_inner();
        let guard = convert::precondition(r.etag, r.acknowledge_app_impact);
        let key = self.keys.set_disabled(&caller, convert::key_id(&r.id, "id")?, true, &guard).await?;
        Ok(Response::new(pb::DisableApiKeyResponse { api_key: Some(key.into()) }))
    }

    async fn enable_api_key(
        &self,
        request: Request<pb::EnableApiKeyRequest>,
    ) -> Result<Response<pb::EnableApiKeyResponse>, Status> {
        let caller = convert::caller(&request)?;
        let r = request.into_inner();
        let guard = convert::precondition(r.etag, false);
        let key = self.keys.set_disabled(&caller, convert::key_id(&r.id, "id")?, false, &guard).await?;
        Ok(Response::new(pb::EnableApiKeyResponse { api_key: Some(key.into()) }))
    }

    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let caller = convert::caller(&request)?;
        let page = convert::audit_list(request.into_inner())?;
        let rows = self.keys.audit_events(&caller, &page.query).await?;
        Ok(Response::new(page.response(rows)?))
    }

    async fn report_key_usage(
        &self,
        request: Request<pb::ReportKeyUsageRequest>,
    ) -> Result<Response<pb::ReportKeyUsageResponse>, Status> {
        let caller = convert::caller(&request)?;
        let agent = convert::user_agent(request.metadata()).to_owned();
        let reports = convert::usage_reports(request.into_inner(), &agent, self.keys.catalog())?;
        let (own, ignored) = self.keys.own_keys(&caller, reports).await?;
        let accepted = own.len();
        self.usage.merge(own);
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        Ok(Response::new(pb::ReportKeyUsageResponse { accepted_count: count(accepted), ignored_count: count(ignored) }))
    }

    async fn get_org_policy(
        &self,
        request: Request<pb::GetOrgPolicyRequest>,
    ) -> Result<Response<pb::GetOrgPolicyResponse>, Status> {
        let policy = self.keys.org_policy(&convert::caller(&request)?).await?;
        Ok(Response::new(pb::GetOrgPolicyResponse { policy: Some(policy.into()) }))
    }

    async fn update_org_policy(
        &self,
        request: Request<pb::UpdateOrgPolicyRequest>,
    ) -> Result<Response<pb::UpdateOrgPolicyResponse>, Status> {
        let caller = convert::caller(&request)?;
        let patch = convert::org_policy(request.into_inner())?;
        let policy = self.keys.set_org_policy(&caller, |current| patch.apply(current)).await?;
        Ok(Response::new(pb::UpdateOrgPolicyResponse { policy: Some(policy.into()) }))
    }

    type WatchKeyChangesStream = ChangeStream;
    type WatchAuditEventsStream = AuditStream;

    async fn watch_key_changes(
        &self,
        request: Request<pb::WatchKeyChangesRequest>,
    ) -> Result<Response<Self::WatchKeyChangesStream>, Status> {
        let peer = request.remote_addr().map(|addr| addr.ip());
        let watch = self.feed.watch(convert::cursor(&request.get_ref().cursor)?, peer).await?;
        // Ends when the client goes away (the stream, and with it the watcher's place, is dropped)
        // or when the server shuts down.
        let stream = futures_util::stream::unfold(watch, |mut watch| async move {
            let update = watch.next().await?;
            Some((Ok(update.into()), watch))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn watch_audit_events(
        &self,
        request: Request<pb::WatchAuditEventsRequest>,
    ) -> Result<Response<Self::WatchAuditEventsStream>, Status> {
        let caller = convert::caller(&request)?;
        let start = convert::audit_watch_start(request.get_ref())?;
        let tail = AuditTail::new(self.keys.clone(), caller, start, self.feed.closing());
        // Ends when the client goes away, after an error, or when the server shuts down.
        let stream = futures_util::stream::unfold(Some(tail), |tail| async move {
            let mut tail = tail?;
            match tail.next().await? {
                Ok(batch) => {
                    let message = pb::WatchAuditEventsResponse {
                        audit_events: batch.events.into_iter().map(Into::into).collect(),
                        cursor: batch.cursor.encode(),
                    };
                    Some((Ok(message), Some(tail)))
                }
                Err(error) => Some((Err(error.into()), None)),
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_api_key_usage(
        &self,
        request: Request<pb::GetApiKeyUsageRequest>,
    ) -> Result<Response<pb::GetApiKeyUsageResponse>, Status> {
        let caller = convert::caller(&request)?;
        let r = request.into_inner();
        let id = convert::key_id(&r.id, "id")?;
        let since = chrono::Utc::now() - convert::usage_window(r.window.as_ref())?;
        let (key, exercised) = self.keys.permission_usage(&caller, id, since).await?;
        let never_exercised = key.permissions.iter().filter(|p| !exercised.contains(p)).cloned().collect();
        Ok(Response::new(pb::GetApiKeyUsageResponse {
            id: key.id.to_string(),
            never_exercised,
            exercised,
            granted: key.permissions,
            window_start: Some(crate::pb::timestamp(since)),
            last_used_time: key.last_used_time.map(crate::pb::timestamp),
        }))
    }

    async fn list_permissions(
        &self,
        _request: Request<pb::ListPermissionsRequest>,
    ) -> Result<Response<pb::ListPermissionsResponse>, Status> {
        let permissions = self
            .keys
            .catalog()
            .permissions()
            .iter()
            .map(|p| pb::Permission {
                name: p.name.clone(),
                category: p.category.clone(),
                description: p.description.clone(),
            })
            .collect();
        Ok(Response::new(pb::ListPermissionsResponse { permissions }))
    }
}
