//! `apikeys.v1.ApiKeyService`: thin handlers that translate protobuf to the key lifecycle and back.
//! Authentication of admin RPCs happened before, in the auth layer; handlers read the principal from
//! the request extensions.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    auth::{Credential, authorize, layer, local::LocalAuthenticator},
    domain::{Actor, ActorType, ApiKey, Caller, MAX_REQUIRED_PERMISSIONS, Violations, is_permission_name},
    error::{Error, Result},
    keys::{CreateKey, Issued, KeyPatch, Keys, ListKeys, Precondition},
    metrics::Metrics,
    pb,
};

/// The gRPC service implementation.
#[derive(Debug, Clone)]
pub struct ApiKeyApi {
    keys: Arc<Keys>,
    authenticator: Arc<LocalAuthenticator>,
    metrics: Arc<Metrics>,
}

impl ApiKeyApi {
    /// The service over the key lifecycle and the in-process authenticator, counting Authenticate
    /// outcomes in `metrics`.
    pub fn new(keys: Arc<Keys>, authenticator: Arc<LocalAuthenticator>, metrics: Arc<Metrics>) -> Self {
        Self { keys, authenticator, metrics }
    }

    /// The Authenticate RPC: the credential in the request, verified, with `required_permissions`
    /// held.
    async fn check(&self, r: pb::AuthenticateRequest) -> Result<pb::Principal> {
        if r.required_permissions.len() > MAX_REQUIRED_PERMISSIONS {
            return Err(Error::invalid(
                "required_permissions",
                format!("at most {MAX_REQUIRED_PERMISSIONS} permissions can be required at once"),
            ));
        }
        let mut v = Violations::default();
        // Names are echoed in PERMISSION_DENIED: only well-formed handles get that far.
        for (i, name) in r.required_permissions.iter().enumerate() {
            if !is_permission_name(name) {
                v.add(
                    format!("required_permissions[{i}]"),
                    "is not a permission name ([a-z][a-z0-9_.:-]*, at most 64 characters)",
                );
            }
        }
        v.finish()?;
        let credential = match (r.token.is_empty(), r.key_id.is_empty() && r.secret.is_empty()) {
            (false, true) => Credential::from_token(r.token.trim()),
            (true, false) => Credential::from_parts(r.key_id.trim(), r.secret.trim()),
            _ => return Err(Error::invalid("token", "give either token, or key_id and secret")),
        }
        .map_err(|_| Error::Unauthenticated)?;
        authorize(&*self.authenticator, credential, &r.required_permissions).await
    }
}

/// The admin caller, from the principal the auth layer put into the request.
fn caller<T>(request: &Request<T>) -> Result<Caller> {
    let principal = layer::principal(request)?;
    let org_id = Uuid::try_parse(&principal.org_id).map_err(|_| Error::Unauthenticated)?;
    Ok(Caller {
        org_id,
        actor: Actor {
            kind: ActorType::ApiKey,
            id: principal.key_id.clone(),
            display_name: principal.display_name.clone(),
        },
        permissions: principal.permissions.clone(),
    })
}

fn timestamp(time: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

impl From<Actor> for pb::Actor {
    fn from(actor: Actor) -> Self {
        let kind = match actor.kind {
            ActorType::ApiKey => pb::ActorType::ApiKey,
            ActorType::User => pb::ActorType::User,
            ActorType::System => pb::ActorType::System,
        };
        Self { r#type: kind.into(), id: actor.id, display_name: actor.display_name }
    }
}

impl From<ApiKey> for pb::ApiKey {
    fn from(key: ApiKey) -> Self {
        let etag = key.etag();
        Self {
            id: key.id.to_string(),
            org_id: key.org_id.to_string(),
            display_name: key.display_name,
            description: key.description,
            permissions: key.permissions,
            app_id: key.app_id.unwrap_or_default(),
            created_by: Some(key.created_by.into()),
            updated_by: Some(key.updated_by.into()),
            create_time: Some(timestamp(key.create_time)),
            update_time: Some(timestamp(key.update_time)),
            etag,
        }
    }
}

impl From<pb::CreateApiKeyRequest> for CreateKey {
    fn from(r: pb::CreateApiKeyRequest) -> Self {
        Self { display_name: r.display_name, description: r.description, permissions: r.permissions, app_id: r.app_id }
    }
}

impl From<pb::ListApiKeysRequest> for ListKeys {
    fn from(r: pb::ListApiKeysRequest) -> Self {
        Self {
            page_size: r.page_size,
            page_token: r.page_token,
            name_contains: r.name_contains,
            app_id: r.app_id,
            permission: r.permission,
        }
    }
}

/// The patch an UpdateApiKeyRequest describes (AIP-134): the fields named in `update_mask`, `*` for
/// all, and with no mask every field that is set.
fn patch(api_key: pb::ApiKey, mask: Option<prost_types::FieldMask>) -> Result<KeyPatch> {
    let paths: Vec<String> = match mask {
        Some(mask) if !mask.paths.is_empty() => mask.paths,
        _ => {
            let mut implied = Vec::new();
            if !api_key.display_name.is_empty() {
                implied.push("display_name".to_owned());
            }
            if !api_key.description.is_empty() {
                implied.push("description".to_owned());
            }
            if !api_key.permissions.is_empty() {
                implied.push("permissions".to_owned());
            }
            implied
        }
    };
    if paths.is_empty() {
        return Err(Error::invalid("update_mask", "names no field to update"));
    }
    let mut patch = KeyPatch::default();
    for path in paths {
        match path.as_str() {
            "display_name" => patch.display_name = Some(api_key.display_name.clone()),
            "description" => patch.description = Some(api_key.description.clone()),
            "permissions" => patch.permissions = Some(api_key.permissions.clone()),
            "*" => {
                patch.display_name = Some(api_key.display_name.clone());
                patch.description = Some(api_key.description.clone());
                patch.permissions = Some(api_key.permissions.clone());
            }
            other => {
                return Err(Error::invalid(
                    "update_mask",
                    format!("{other:?} cannot be updated; use display_name, description, permissions or *"),
                ));
            }
        }
    }
    Ok(patch)
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
        let caller = caller(&request)?;
        let (api_key, secret, token) = issued(self.keys.create(&caller, request.into_inner().into()).await?);
        Ok(Response::new(pb::CreateApiKeyResponse { api_key, secret, token }))
    }

    async fn get_api_key(
        &self,
        request: Request<pb::GetApiKeyRequest>,
    ) -> Result<Response<pb::GetApiKeyResponse>, Status> {
        let caller = caller(&request)?;
        let key = self.keys.get(&caller, &request.get_ref().id).await?;
        Ok(Response::new(pb::GetApiKeyResponse { api_key: Some(key.into()) }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let caller = caller(&request)?;
        let (keys, next_page_token) = self.keys.list(&caller, request.into_inner().into()).await?;
        let api_keys = keys.into_iter().map(Into::into).collect();
        Ok(Response::new(pb::ListApiKeysResponse { api_keys, next_page_token }))
    }

    async fn update_api_key(
        &self,
        request: Request<pb::UpdateApiKeyRequest>,
    ) -> Result<Response<pb::UpdateApiKeyResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let api_key = r.api_key.ok_or_else(|| Error::invalid("api_key", "is required"))?;
        let id = api_key.id.clone();
        let guard = Precondition { etag: r.etag, acknowledge_app_impact: r.acknowledge_app_impact };
        let key = self.keys.update(&caller, &id, patch(api_key, r.update_mask)?, &guard).await?;
        Ok(Response::new(pb::UpdateApiKeyResponse { api_key: Some(key.into()) }))
    }

    async fn regenerate_api_key_secret(
        &self,
        request: Request<pb::RegenerateApiKeySecretRequest>,
    ) -> Result<Response<pb::RegenerateApiKeySecretResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let guard = Precondition { etag: r.etag, acknowledge_app_impact: r.acknowledge_app_impact };
        let (api_key, secret, token) = issued(self.keys.regenerate(&caller, &r.id, &guard).await?);
        Ok(Response::new(pb::RegenerateApiKeySecretResponse { api_key, secret, token }))
    }

    async fn delete_api_key(
        &self,
        request: Request<pb::DeleteApiKeyRequest>,
    ) -> Result<Response<pb::DeleteApiKeyResponse>, Status> {
        let caller = caller(&request)?;
        let r = request.into_inner();
        let guard = Precondition { etag: r.etag, acknowledge_app_impact: r.acknowledge_app_impact };
        self.keys.delete(&caller, &r.id, &guard).await?;
        Ok(Response::new(pb::DeleteApiKeyResponse {}))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let result = self.check(request.into_inner()).await;
        // Counted here, where the outcome is known.
        self.metrics.observe_authenticate(result.as_ref().map_or_else(|e| e.reason(), |_| "OK"));
        Ok(Response::new(pb::AuthenticateResponse { principal: Some(result?) }))
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
