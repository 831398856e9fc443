//! The reference consumer of apikeys: an in-memory incident service behind the apikeys auth layer.
//!
//! - gRPC `incidents.v1.IncidentService` (CreateIncident needs `create_incident`, ListIncidents needs
//!   `read_all_incidents`, UpdateIncident needs `edit_all_incidents_fields`);
//! - the HTTP route `GET /v1/incidents` (JSON, needs `read_all_incidents`) on the same port and behind
//!   the same layer;
//! - gRPC health and reflection, public.
//!
//! The API key account rules come from the principal apikeys returns, never from constants here: an
//! incident created without an owner goes to `restrictions.unowned_incident_group`, and an API key
//! account cannot be made owner (`can_own_incidents`) or member (`can_be_incident_member`). This
//! service counts as API key accounts the caller's own key ID and any ID written `apikey:<id>`.
//!
//! Handlers stay thin: read the principal, validate, apply the rules, touch the store.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
};

use apikeys::{
    auth::{AccessPolicy, AuthLayer, Authenticator, Principal, layer::principal},
    pb::{
        PrincipalRestrictions,
        incidents::v1::{
            CreateIncidentRequest, CreateIncidentResponse, Incident, ListIncidentsRequest, ListIncidentsResponse,
            UpdateIncidentRequest, UpdateIncidentResponse,
            incident_service_server::{IncidentService, IncidentServiceServer},
        },
    },
};
use axum::{extract::State, response::IntoResponse};
use http::{StatusCode, header};
use tokio::net::TcpListener;
use tonic::{
    Code, Request, Response, Status,
    transport::{Server, server::TcpIncoming},
};
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of the errors this service raises itself (the auth layer's use `apikeys`).
pub const ERROR_DOMAIN: &str = "incidents.example";
/// The gRPC path prefix of the service.
const SERVICE: &str = "/incidents.v1.IncidentService";
/// Longest title accepted.
const MAX_TITLE_CHARS: usize = 200;
/// Longest user ID accepted.
const MAX_ID_CHARS: usize = 128;
/// Most members an incident can have.
const MAX_MEMBERS: usize = 100;
/// Prefix that marks an ID as an API key account.
pub const API_KEY_ID_PREFIX: &str = "apikey:";

/// What each path needs: the permissions of the issue, health and reflection public, nothing else.
pub fn access_policy() -> AccessPolicy {
    AccessPolicy::new()
        .require(&format!("{SERVICE}/CreateIncident"), ["create_incident"])
        .require(&format!("{SERVICE}/ListIncidents"), ["read_all_incidents"])
        .require(&format!("{SERVICE}/UpdateIncident"), ["edit_all_incidents_fields"])
        .require("GET /v1/incidents", ["read_all_incidents"])
        .public_health_and_reflection()
}

/// Incidents per organization, in creation order.
#[derive(Debug, Clone, Default)]
pub struct Store {
    orgs: Arc<Mutex<HashMap<String, Vec<Incident>>>>,
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<Incident>>> {
        // Every update is a single push or field assignment on a validated value: a panic cannot
        // leave the map half-changed, so a poisoned lock is safe to keep using.
        self.orgs.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The incidents of `org_id`, oldest first.
    pub fn list(&self, org_id: &str) -> Vec<Incident> {
        self.lock().get(org_id).cloned().unwrap_or_default()
    }
}

/// The gRPC handlers.
#[derive(Debug, Clone, Default)]
pub struct IncidentApi {
    store: Store,
}

impl IncidentApi {
    /// Handlers over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

#[tonic::async_trait]
impl IncidentService for IncidentApi {
    async fn create_incident(
        &self,
        request: Request<CreateIncidentRequest>,
    ) -> Result<Response<CreateIncidentResponse>, Status> {
        let caller = principal(&request)?.clone();
        let incident = new_incident(&caller, request.into_inner())?;
        self.store.lock().entry(caller.org_id).or_default().push(incident.clone());
        Ok(Response::new(CreateIncidentResponse { incident: Some(incident) }))
    }

    async fn list_incidents(
        &self,
        request: Request<ListIncidentsRequest>,
    ) -> Result<Response<ListIncidentsResponse>, Status> {
        let caller = principal(&request)?;
        Ok(Response::new(ListIncidentsResponse { incidents: self.store.list(&caller.org_id) }))
    }

    async fn update_incident(
        &self,
        request: Request<UpdateIncidentRequest>,
    ) -> Result<Response<UpdateIncidentResponse>, Status> {
        let caller = principal(&request)?.clone();
        let change = request.into_inner();
        validate_update(&caller, &change)?;
        let mut orgs = self.store.lock();
        let incident = orgs
            .get_mut(&caller.org_id)
            .and_then(|incidents| incidents.iter_mut().find(|i| i.id == change.id))
            .ok_or_else(|| not_found(&change.id))?;
        apply_update(incident, change);
        Ok(Response::new(UpdateIncidentResponse { incident: Some(incident.clone()) }))
    }
}

/// `GET /v1/incidents`: the caller's incidents as JSON. The auth layer has already checked the
/// credential and `read_all_incidents`.
async fn list_http(State(store): State<Store>, request: axum::extract::Request) -> axum::response::Response {
    let Some(caller) = request.extensions().get::<Principal>() else {
        // Only reachable if the route is wired without the auth layer: fail closed.
        return StatusCode::UNAUTHORIZED.into_response();
    };
    let incidents: Vec<serde_json::Value> = store.list(&caller.org_id).iter().map(incident_json).collect();
    let body = serde_json::json!({ "incidents": incidents }).to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn incident_json(incident: &Incident) -> serde_json::Value {
    serde_json::json!({
        "id": incident.id,
        "org_id": incident.org_id,
        "title": incident.title,
        "owner": incident.owner,
        "owner_group": incident.owner_group,
        "members": incident.members,
        "created_by": incident.created_by,
    })
}

/// The rules for the caller's kind of account, as apikeys sent them. A principal without them gets
/// the all-`false` defaults, the restrictive answer.
fn rules(caller: &Principal) -> PrincipalRestrictions {
    caller.restrictions.clone().unwrap_or_default()
}

/// Whether `id` names an API key account: the caller's own key ID, or anything written `apikey:…`.
pub fn is_api_key_account(caller: &Principal, id: &str) -> bool {
    id == caller.key_id || id.starts_with(API_KEY_ID_PREFIX)
}

/// Validates a create request and builds the incident, applying the account rules.
fn new_incident(caller: &Principal, request: CreateIncidentRequest) -> Result<Incident, Status> {
    let rules = rules(caller);
    let title = request.title.trim();
    if title.is_empty() || title.chars().count() > MAX_TITLE_CHARS {
        return Err(invalid("title", format!("required, at most {MAX_TITLE_CHARS} characters")));
    }
    let owner = Some(&request.owner).filter(|o| !o.is_empty());
    check_user_ids(caller, &rules, owner, &request.members, "members")?;
    let owner_group = if request.owner.is_empty() {
        if rules.unowned_incident_group.is_empty() {
            return Err(rule_violation(
                "NO_UNOWNED_INCIDENT_GROUP",
                "an incident created without an owner goes to the account's default group \
                 (restrictions.unowned_incident_group), and this account has none; name an owner",
            ));
        }
        rules.unowned_incident_group.clone()
    } else {
        String::new()
    };
    let mut members = request.members;
    dedup(&mut members);
    Ok(Incident {
        id: uuid::Uuid::new_v4().to_string(),
        org_id: caller.org_id.clone(),
        title: title.to_owned(),
        owner: request.owner,
        owner_group,
        members,
        created_by: caller.key_id.clone(),
    })
}

/// Validates an update request before the store is touched.
fn validate_update(caller: &Principal, change: &UpdateIncidentRequest) -> Result<(), Status> {
    if change.id.is_empty() {
        return Err(invalid("id", "required"));
    }
    if change.title.chars().count() > MAX_TITLE_CHARS {
        return Err(invalid("title", format!("at most {MAX_TITLE_CHARS} characters")));
    }
    let owner = Some(&change.owner).filter(|o| !o.is_empty());
    check_user_ids(caller, &rules(caller), owner, &change.add_members, "add_members")
}

/// Applies a validated update.
fn apply_update(incident: &mut Incident, change: UpdateIncidentRequest) {
    let title = change.title.trim();
    if !title.is_empty() {
        incident.title = title.to_owned();
    }
    if !change.owner.is_empty() {
        incident.owner = change.owner;
        incident.owner_group.clear();
    }
    incident.members.extend(change.add_members);
    dedup(&mut incident.members);
}

/// Checks the owner and members: well-formed IDs, and no API key account unless the rules allow it.
fn check_user_ids(
    caller: &Principal,
    rules: &PrincipalRestrictions,
    owner: Option<&String>,
    members: &[String],
    members_field: &str,
) -> Result<(), Status> {
    if let Some(owner) = owner {
        check_id("owner", owner)?;
        if is_api_key_account(caller, owner) && !rules.can_own_incidents {
            return Err(rule_violation(
                "API_KEY_CANNOT_OWN_INCIDENTS",
                format!("owner {owner:?} is an API key account, and API key accounts cannot own incidents"),
            ));
        }
    }
    if members.len() > MAX_MEMBERS {
        return Err(invalid(members_field, format!("at most {MAX_MEMBERS} members")));
    }
    for (i, member) in members.iter().enumerate() {
        check_id(&format!("{members_field}[{i}]"), member)?;
        if is_api_key_account(caller, member) && !rules.can_be_incident_member {
            return Err(rule_violation(
                "API_KEY_CANNOT_BE_INCIDENT_MEMBER",
                format!(
                    "{members_field}[{i}] {member:?} is an API key account, and API key accounts cannot be \
                     incident members"
                ),
            ));
        }
    }
    Ok(())
}

fn check_id(field: &str, id: &str) -> Result<(), Status> {
    if id.trim().is_empty() || id.chars().count() > MAX_ID_CHARS || id.chars().any(char::is_control) {
        return Err(invalid(field, format!("a non-empty ID of at most {MAX_ID_CHARS} printable characters")));
    }
    Ok(())
}

fn dedup(ids: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
}

fn status(code: Code, reason: &str, message: String, details: ErrorDetails) -> Status {
    let mut details = details;
    details.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(code, message, details)
}

/// INVALID_ARGUMENT with a `BadRequest` naming `field`.
fn invalid(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    let details = ErrorDetails::with_bad_request_violation(field, description.clone());
    status(Code::InvalidArgument, "INVALID_ARGUMENT", format!("{field}: {description}"), details)
}

/// FAILED_PRECONDITION citing an account rule.
fn rule_violation(reason: &str, message: impl Into<String>) -> Status {
    status(Code::FailedPrecondition, reason, message.into(), ErrorDetails::new())
}

/// NOT_FOUND; incidents of other organizations look the same as missing ones.
fn not_found(id: &str) -> Status {
    status(Code::NotFound, "INCIDENT_NOT_FOUND", format!("incident {id:?} not found"), ErrorDetails::new())
}

/// Serves the incident service on `listener` until `shutdown` resolves: gRPC and `GET /v1/incidents`
/// (HTTP/1.1 or HTTP/2) behind one [`AuthLayer`] verifying credentials with `authenticator`.
///
/// # Errors
/// Transport failures, or a broken reflection descriptor (startup).
pub async fn serve<A: Authenticator>(
    listener: TcpListener,
    authenticator: Arc<A>,
    store: Store,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<IncidentServiceServer<IncidentApi>>().await;
    // Health's descriptors too: grpcurl resolves every method it calls through reflection.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(apikeys::pb::INCIDENTS_FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let http = axum::Router::new().route("/v1/incidents", axum::routing::get(list_http)).with_state(store.clone());
    Server::builder()
        .accept_http1(true)
        .layer(AuthLayer::new(authenticator, access_policy()))
        .add_routes(http.into())
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(IncidentServiceServer::new(IncidentApi::new(store)))
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), shutdown)
        .await?;
    Ok(())
}
