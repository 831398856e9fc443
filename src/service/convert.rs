//! The edge of the service: protobuf requests parsed into validated domain input (typed IDs, checked
//! names, catalog permissions), with every bad field named by its proto path; page tokens; and domain
//! values turned back into protobuf. Nothing past this module sees a proto field path or a string ID.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tonic::Request;
use uuid::Uuid;

use crate::{
    auth::{Credential, layer, restrictions::ClientAddress},
    domain::{
        self, Actor, ActorType, ApiKey, Caller, Catalog, KeyId, KeyState, MAX_DISPLAY_NAME_CHARS,
        MAX_REQUIRED_PERMISSIONS, OrgPolicy, Origin, Violations, is_permission_name,
    },
    error::{Error, FieldViolation, Result},
    keys::{CreateKey, KeyPatch, Precondition},
    pb,
    pb::timestamp,
    revocation::Cursor,
    store::ListQuery,
    store::{AuditQuery, entities::audit_event},
    usage::{Seen, clean_agent},
};

/// Page size when the request says 0.
pub const DEFAULT_PAGE_SIZE: u64 = 50;
/// Largest page size; larger requests are clamped.
pub const MAX_PAGE_SIZE: u64 = 1000;

/// The admin caller, from the principal the auth layer put into the request.
///
/// # Errors
/// UNAUTHENTICATED if no principal is there (a wiring bug; fails closed).
pub fn caller<T>(request: &Request<T>) -> Result<Caller> {
    let principal = layer::principal(request)?;
    let address = request.extensions().get::<ClientAddress>().and_then(|client| client.0);
    let (kind, id) = if principal.is_person() {
        (ActorType::User, principal.user_id.clone())
    } else {
        (ActorType::ApiKey, principal.key_id.clone())
    };
    Ok(Caller {
        org_id: principal.org_id.parse().map_err(|_| Error::Unauthenticated)?,
        actor: Actor { kind, id, display_name: principal.display_name.clone() },
        permissions: principal.permissions.clone(),
        expire_time: principal.expire_time.as_ref().and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0)),
        origin: Origin {
            request_id: request_id(request.metadata()),
            address: address.map(|a| a.to_string()).unwrap_or_default(),
        },
    })
}

/// The window of a GetApiKeyUsage request: 1 hour to 400 days, 30 days when unset.
///
/// # Errors
/// INVALID_ARGUMENT naming `window`.
pub fn usage_window(window: Option<&prost_types::Duration>) -> Result<chrono::Duration> {
    let Some(window) = window else { return Ok(chrono::Duration::days(30)) };
    let seconds = window.seconds;
    if !(3600..=400 * 86_400).contains(&seconds) || window.nanos != 0 {
        return Err(Error::invalid("window", "must be whole seconds between 1 hour and 400 days"));
    }
    Ok(chrono::Duration::seconds(seconds))
}

/// The caller's `user-agent` (empty if none or not text): for Authenticate, the consumer service.
pub fn user_agent(metadata: &tonic::metadata::MetadataMap) -> &str {
    // The standard header's name, not a string to parse: this runs on every Authenticate.
    metadata.as_ref().get(http::header::USER_AGENT).and_then(|value| value.to_str().ok()).unwrap_or_default()
}

/// Longest `x-request-id` kept as sent.
const MAX_REQUEST_ID_CHARS: usize = 128;

/// The caller's `x-request-id` if it is printable ASCII of at most 128 characters, else a new
/// UUID: an ID from the caller ties the audit event to its own logs, and a bad one cannot forge
/// log lines.
fn request_id(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .filter(|id| !id.is_empty() && id.len() <= MAX_REQUEST_ID_CHARS && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| Uuid::new_v4().to_string(), str::to_owned)
}

/// The cursor of a WatchKeyChanges request; `None` when empty (start from now).
///
/// # Errors
/// INVALID_ARGUMENT naming `cursor`.
pub fn cursor(raw: &str) -> Result<Option<Cursor>> {
    (!raw.is_empty()).then(|| raw.parse()).transpose()
}

/// A key ID from `field`.
///
/// # Errors
/// INVALID_ARGUMENT naming `field`.
pub fn key_id(raw: &str, field: &str) -> Result<KeyId> {
    raw.trim().parse().map_err(|_| Error::invalid(field, "must be a UUID"))
}

/// A point in time from a protobuf timestamp.
///
/// # Errors
/// A violation of `field` for a timestamp out of range.
pub fn time(
    t: &prost_types::Timestamp,
    field: &str,
) -> std::result::Result<chrono::DateTime<chrono::Utc>, crate::error::FieldViolation> {
    // google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
    const SECONDS: std::ops::RangeInclusive<i64> = -62_135_596_800..=253_402_300_799;
    let nanos = u32::try_from(t.nanos).ok().filter(|n| *n < 1_000_000_000 && SECONDS.contains(&t.seconds));
    nanos.and_then(|nanos| chrono::DateTime::from_timestamp(t.seconds, nanos)).ok_or_else(|| {
        crate::error::FieldViolation::new(field, "is not a valid timestamp (years 1 to 9999, nanos 0 to 999999999)")
    })
}

/// A `google.protobuf.Duration` that is valid and not negative: seconds from 0 to 10 000 years,
/// nanos from 0 to 999 999 999.
fn duration(d: &prost_types::Duration) -> Option<std::time::Duration> {
    let seconds = u64::try_from(d.seconds).ok().filter(|s| *s <= 315_576_000_000)?;
    let nanos = u32::try_from(d.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    Some(std::time::Duration::new(seconds, nanos))
}

/// The grace period of a RegenerateApiKeySecret; `None` for none.
///
/// # Errors
/// INVALID_ARGUMENT naming `previous_secret_ttl`: negative, or longer than 7 days.
pub fn previous_secret_ttl(ttl: Option<&prost_types::Duration>) -> Result<Option<std::time::Duration>> {
    let Some(ttl) = ttl else { return Ok(None) };
    match duration(ttl) {
        Some(ttl) if ttl.is_zero() => Ok(None),
        Some(ttl) if ttl <= domain::MAX_PREVIOUS_SECRET_TTL => Ok(Some(ttl)),
        _ => Err(Error::invalid("previous_secret_ttl", "must be between 0 and 7 days")),
    }
}

/// The guards every mutation request carries.
pub fn precondition(etag: String, acknowledge_app_impact: bool) -> Precondition {
    Precondition { etag, acknowledge_app_impact }
}

/// A validated Authenticate request.
#[derive(Debug)]
pub struct AuthenticateCheck {
    /// The credential to verify.
    pub credential: Credential,
    /// Permissions the principal must hold.
    pub required: Vec<String>,
    /// The client's address, if the caller sent it.
    pub client: Option<std::net::IpAddr>,
    /// The caller checks the network and the rate itself.
    pub caller_enforces_restrictions: bool,
}

/// The credential, required permissions and client of an Authenticate request. A credential that
/// does not parse is UNAUTHENTICATED, like a wrong one.
///
/// # Errors
/// INVALID_ARGUMENT (neither or both credential forms; too many or malformed required permissions,
/// which PERMISSION_DENIED would echo; a malformed `client_address`), UNAUTHENTICATED.
pub fn authenticate(r: pb::AuthenticateRequest) -> Result<AuthenticateCheck> {
    if r.required_permissions.len() > MAX_REQUIRED_PERMISSIONS {
        return Err(Error::invalid(
            "required_permissions",
            format!("at most {MAX_REQUIRED_PERMISSIONS} permissions can be required at once"),
        ));
    }
    let mut v = Violations::default();
    permission_names(&r.required_permissions, "required_permissions", &mut v);
    let client = v.check(optional_address(&r.client_address, "client_address")).flatten();
    v.finish()?;
    let credential = match (r.token.is_empty(), r.key_id.is_empty() && r.secret.is_empty()) {
        (false, true) => Credential::from_token(r.token.trim()),
        (true, false) => Credential::from_parts(r.key_id.trim(), r.secret.trim()),
        _ => return Err(Error::invalid("token", "give either token, or key_id and secret")),
    }
    .map_err(|_| Error::Unauthenticated)?;
    Ok(AuthenticateCheck {
        credential,
        required: r.required_permissions,
        client,
        caller_enforces_restrictions: r.caller_enforces_restrictions,
    })
}

/// Records a violation of `field[i]` for each of `names` that is not a permission name.
fn permission_names(names: &[String], field: &str, v: &mut Violations) {
    for (i, name) in names.iter().enumerate() {
        if !is_permission_name(name) {
            v.add(format!("{field}[{i}]"), "is not a permission name ([a-z][a-z0-9_.:-]*, at most 64 characters)");
        }
    }
}

/// An optional IP address field: empty is none; IPv4-mapped IPv6 addresses read as IPv4.
///
/// # Errors
/// A violation of `field` for anything else.
fn optional_address(text: &str, field: &str) -> std::result::Result<Option<std::net::IpAddr>, FieldViolation> {
    match text.trim() {
        "" => Ok(None),
        text => text
            .parse::<std::net::IpAddr>()
            .map(|addr| Some(addr.to_canonical()))
            .map_err(|_| FieldViolation::new(field, "is not an IPv4 or IPv6 address")),
    }
}

/// Most entries in one ReportKeyUsage request.
pub const MAX_USAGE_REPORTS: usize = 1000;

/// The uses a ReportKeyUsage request reports, checked (every malformed entry named as
/// `usages[i].field`): a time in the future counts as now, an empty agent is the reporter's
/// (`reporter_agent`), permissions not in `catalog` are dropped.
///
/// # Errors
/// INVALID_ARGUMENT.
pub fn usage_reports(
    r: pb::ReportKeyUsageRequest,
    reporter_agent: &str,
    catalog: &Catalog,
) -> Result<Vec<(uuid::Uuid, Seen)>> {
    if r.usages.len() > MAX_USAGE_REPORTS {
        return Err(Error::invalid("usages", format!("at most {MAX_USAGE_REPORTS} entries per report")));
    }
    let now = chrono::Utc::now();
    let mut v = Violations::default();
    let mut reports = Vec::with_capacity(r.usages.len());
    for (i, usage) in r.usages.into_iter().enumerate() {
        let field = |name: &str| format!("usages[{i}].{name}");
        let id = v.check(
            usage
                .key_id
                .trim()
                .parse::<uuid::Uuid>()
                .map_err(|_| FieldViolation::new(field("key_id"), "must be a UUID")),
        );
        let time = match &usage.last_used_time {
            Some(t) => v.check(time(t, &field("last_used_time"))).map(|t| t.min(now)),
            None => {
                v.add(field("last_used_time"), "is required");
                None
            }
        };
        let address = v.check(optional_address(&usage.last_used_address, &field("last_used_address")));
        if usage.exercised_permissions.len() > MAX_REQUIRED_PERMISSIONS {
            v.add(field("exercised_permissions"), format!("at most {MAX_REQUIRED_PERMISSIONS} permissions"));
        }
        permission_names(&usage.exercised_permissions, &field("exercised_permissions"), &mut v);
        if let (Some(id), Some(time), Some(address)) = (id, time, address) {
            let time = std::time::SystemTime::from(time);
            let agent = if usage.last_used_agent.is_empty() { reporter_agent } else { &usage.last_used_agent };
            // Only the catalog's names: a reporter cannot grow a key's record with made-up ones
            // (a consumer with a newer catalog loses only what apikeys would not show anyway).
            let exercised =
                usage.exercised_permissions.into_iter().filter(|p| catalog.contains(p)).map(|p| (p, time)).collect();
            reports.push((id, Seen { time, address, agent: clean_agent(agent), exercised }));
        }
    }
    v.finish()?;
    Ok(reports)
}

/// The org policy an UpdateOrgPolicy request sets.
///
/// # Errors
/// INVALID_ARGUMENT naming `policy` or `policy.lockout_threshold`.
pub fn org_policy(r: pb::UpdateOrgPolicyRequest) -> Result<PolicyPatch> {
    let policy = r.policy.ok_or_else(|| Error::invalid("policy", "is required"))?;
    let (mut threshold, mut lifetime) = match &r.update_mask {
        Some(mask) if !mask.paths.is_empty() => (false, false),
        _ => (true, policy.max_key_lifetime.is_some()),
    };
    for path in r.update_mask.iter().flat_map(|mask| &mask.paths) {
        match path.as_str() {
            "lockout_threshold" => threshold = true,
            "max_key_lifetime" => lifetime = true,
            "*" => (threshold, lifetime) = (true, true),
            other => {
                return Err(Error::invalid(
                    "update_mask",
                    format!("{other:?} cannot be updated; use lockout_threshold, max_key_lifetime or *"),
                ));
            }
        }
    }
    let lockout_threshold = threshold
        .then(|| {
            u32::try_from(policy.lockout_threshold)
                .map_err(|_| Error::invalid("policy.lockout_threshold", "must not be negative (0 turns locking off)"))
        })
        .transpose()?;
    let max_key_lifetime = lifetime
        .then(|| match policy.max_key_lifetime {
            None => Ok(None),
            Some(d) if d.seconds < 0 || d.nanos != 0 || (d.seconds > 0 && d.seconds < 60) => Err(Error::invalid(
                "policy.max_key_lifetime",
                "must be whole seconds, at least a minute (or zero for no maximum)",
            )),
            Some(d) => Ok(u64::try_from(d.seconds).ok().filter(|s| *s > 0).map(std::time::Duration::from_secs)),
        })
        .transpose()?;
    Ok(PolicyPatch { lockout_threshold, max_key_lifetime })
}

/// The parts of an org policy an UpdateOrgPolicy changes; `None` leaves one alone.
#[derive(Debug, Clone, Copy)]
pub struct PolicyPatch {
    /// New lockout threshold.
    pub lockout_threshold: Option<u32>,
    /// New maximum key lifetime (`Some(None)`: no maximum).
    pub max_key_lifetime: Option<Option<std::time::Duration>>,
}

impl PolicyPatch {
    /// `policy` with this patch applied.
    pub fn apply(self, policy: OrgPolicy) -> OrgPolicy {
        OrgPolicy {
            lockout_threshold: self.lockout_threshold.unwrap_or(policy.lockout_threshold),
            max_key_lifetime: self.max_key_lifetime.unwrap_or(policy.max_key_lifetime),
        }
    }
}

impl From<OrgPolicy> for pb::OrgPolicy {
    fn from(policy: OrgPolicy) -> Self {
        Self {
            lockout_threshold: i32::try_from(policy.lockout_threshold).unwrap_or(i32::MAX),
            max_key_lifetime: policy.max_key_lifetime.map(|max| prost_types::Duration {
                seconds: i64::try_from(max.as_secs()).unwrap_or(i64::MAX),
                nanos: 0,
            }),
        }
    }
}

/// A validated CreateApiKey.
///
/// # Errors
/// INVALID_ARGUMENT naming every bad field.
pub fn create(r: pb::CreateApiKeyRequest, catalog: &Catalog) -> Result<CreateKey> {
    let mut v = Violations::default();
    let display_name = v.check(domain::display_name(&r.display_name, "display_name"));
    let description = v.check(domain::description(&r.description, "description"));
    let permissions = v.check_all(domain::permissions(catalog, &r.permissions, "permissions"));
    let app_id = v.check(domain::app_id(&r.app_id, "app_id"));
    let expire_time = match &r.expire_time {
        Some(t) => v.check(time(t, "expire_time")).map(Some),
        None => Some(None),
    };
    let allowed_cidrs = v.check_all(domain::allowed_cidrs(&r.allowed_cidrs, "allowed_cidrs"));
    let rate_limit = rate_limit(r.rate_limit.as_ref(), "rate_limit", &mut v);
    v.finish()?;
    match (display_name, description, permissions, app_id, expire_time, allowed_cidrs, rate_limit) {
        (
            Some(display_name),
            Some(description),
            Some(permissions),
            Some(app_id),
            Some(expire_time),
            Some(allowed_cidrs),
            Some(rate_limit),
        ) => Ok(CreateKey { display_name, description, permissions, app_id, expire_time, allowed_cidrs, rate_limit }),
        _ => Err(Error::internal("validation passed without values")),
    }
}

/// A validated optional rate limit (`Some(None)`: none given), or `None` with the violations
/// recorded.
fn rate_limit(raw: Option<&pb::RateLimit>, field: &str, v: &mut Violations) -> Option<Option<domain::RateLimit>> {
    let Some(limit) = raw else { return Some(None) };
    let window = limit.window.as_ref().and_then(duration);
    v.check_all(domain::rate_limit(limit.requests, window, field)).map(Some)
}

/// The key ID and validated patch of an UpdateApiKey (AIP-134): the fields named in `update_mask`,
/// `*` for all, and with no mask every field that is set.
///
/// # Errors
/// INVALID_ARGUMENT naming every bad field.
pub fn update(r: pb::UpdateApiKeyRequest, catalog: &Catalog) -> Result<(KeyId, KeyPatch, Precondition)> {
    let api_key = r.api_key.ok_or_else(|| Error::invalid("api_key", "is required"))?;
    let id = key_id(&api_key.id, "api_key.id")?;
    let (mut name, mut description, mut permissions, mut expiry, mut networks, mut rate) = match &r.update_mask {
        Some(mask) if !mask.paths.is_empty() => (false, false, false, false, false, false),
        _ => (
            !api_key.display_name.is_empty(),
            !api_key.description.is_empty(),
            !api_key.permissions.is_empty(),
            api_key.expire_time.is_some(),
            !api_key.allowed_cidrs.is_empty(),
            api_key.rate_limit.is_some(),
        ),
    };
    for path in r.update_mask.iter().flat_map(|mask| &mask.paths) {
        match path.as_str() {
            "display_name" => name = true,
            "description" => description = true,
            "permissions" => permissions = true,
            "expire_time" => expiry = true,
            "allowed_cidrs" => networks = true,
            "rate_limit" => rate = true,
            "*" => (name, description, permissions, expiry, networks, rate) = (true, true, true, true, true, true),
            other => {
                return Err(Error::invalid(
                    "update_mask",
                    format!(
                        "{other:?} cannot be updated; use display_name, description, permissions, expire_time, \
                         allowed_cidrs, rate_limit or *"
                    ),
                ));
            }
        }
    }
    if !(name || description || permissions || expiry || networks || rate) {
        return Err(Error::invalid("update_mask", "names no field to update"));
    }
    let mut v = Violations::default();
    let patch = KeyPatch {
        display_name: name
            .then(|| v.check(domain::display_name(&api_key.display_name, "api_key.display_name")))
            .flatten(),
        description: description
            .then(|| v.check(domain::description(&api_key.description, "api_key.description")))
            .flatten(),
        permissions: permissions
            .then(|| v.check_all(domain::permissions(catalog, &api_key.permissions, "api_key.permissions")))
            .flatten(),
        expire_time: expiry
            .then(|| match &api_key.expire_time {
                Some(t) => v.check(time(t, "api_key.expire_time")).map(Some),
                None => Some(None),
            })
            .flatten(),
        allowed_cidrs: networks
            .then(|| v.check_all(domain::allowed_cidrs(&api_key.allowed_cidrs, "api_key.allowed_cidrs")))
            .flatten(),
        rate_limit: rate.then(|| rate_limit(api_key.rate_limit.as_ref(), "api_key.rate_limit", &mut v)).flatten(),
    };
    v.finish()?;
    Ok((id, patch, precondition(r.etag, r.acknowledge_app_impact)))
}

/// A validated ListApiKeys: the store query (one row more than the page, to tell whether another
/// page follows) and what the next page token needs.
#[derive(Debug)]
pub struct ListPage {
    /// The query.
    pub query: ListQuery,
    /// Keys per page.
    pub page_size: u64,
    fingerprint: String,
}

/// Opaque page token: where the previous page ended (name key and ID of its last key) and a
/// fingerprint of the filters it was for.
#[derive(Serialize, Deserialize)]
struct PageToken {
    k: String,
    /// The key ID of a ListApiKeys position. Absent from the audit trail's tokens, and from tokens
    /// of versions before soft delete, when the name key alone was the position (unique among the
    /// keys listed): such a token continues after every key of that name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    i: Option<Uuid>,
    f: String,
}

/// A short digest of a list request's filters: a page token is only valid with the filters it
/// was issued for.
fn fingerprint(parts: &[Option<String>]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_deref().unwrap_or("\u{0}").as_bytes());
        hasher.update([0xff]);
    }
    hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn filter_fingerprint(query: &ListQuery) -> String {
    fingerprint(&[
        query.name_contains.clone(),
        query.app_id.clone(),
        query.permission.clone(),
        query.state.map(|s| format!("{s:?}")),
        query.expiring_before.map(|t| t.to_rfc3339()),
        // Absent unless set, so tokens issued before the filter existed stay valid.
        query.show_deleted.then(|| "show_deleted".to_owned()),
    ])
}

/// The page size of a list request: 0 means the default, more than the maximum is clamped, a
/// negative one is a violation.
fn page_size(raw: i32, v: &mut Violations) -> u64 {
    if raw < 0 {
        v.add("page_size", "must not be negative");
    }
    match u64::try_from(raw).unwrap_or(0) {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// The opaque token of a page that ends at position `k` (and key ID `i`, for keys), for the filters
/// of `fingerprint`.
fn encode_token(k: String, i: Option<Uuid>, fingerprint: &str) -> Result<String> {
    let json = serde_json::to_vec(&PageToken { k, i, f: fingerprint.to_owned() }).map_err(Error::internal)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
}

fn decode_token(text: &str) -> Option<PageToken> {
    if text.len() > 2048 {
        return None;
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()?;
    let token: PageToken = serde_json::from_slice(&json).ok()?;
    // The position goes into a query: refuse what no display name can contain.
    (!token.k.chars().any(char::is_control) && token.k.chars().count() <= MAX_DISPLAY_NAME_CHARS).then_some(token)
}

/// A validated ListApiKeys request.
///
/// # Errors
/// INVALID_ARGUMENT naming every bad field (page_size, page_token, filters).
pub fn list(r: pb::ListApiKeysRequest, catalog: &Catalog) -> Result<ListPage> {
    let mut v = Violations::default();
    let page_size = page_size(r.page_size, &mut v);
    let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.trim().to_owned());
    let permission = non_empty(&r.permission);
    if let Some(p) = &permission
        && !catalog.contains(p)
    {
        v.add("permission", format!("unknown permission {p:?}"));
    }
    for (field, value) in [("name_contains", &r.name_contains), ("app_id", &r.app_id)] {
        if value.chars().any(char::is_control) {
            v.add(field, "must not contain control characters");
        }
    }
    if r.name_contains.chars().count() > MAX_DISPLAY_NAME_CHARS {
        v.add("name_contains", "is longer than any display name");
    }
    let state = match r.state() {
        pb::api_key::State::Unspecified => None,
        pb::api_key::State::Active => Some(KeyState::Active),
        pb::api_key::State::Disabled => Some(KeyState::Disabled),
        pb::api_key::State::Locked => Some(KeyState::Locked),
        pb::api_key::State::Expired => Some(KeyState::Expired),
        pb::api_key::State::Deleted => Some(KeyState::Deleted),
    };
    if state.is_none() && r.state != 0 {
        v.add("state", "is not a state");
    }
    let expiring_before = r.expiring_before.as_ref().and_then(|t| v.check(time(t, "expiring_before")));
    let mut query = ListQuery {
        name_contains: non_empty(&r.name_contains).map(|s| domain::name_key(&s)),
        app_id: non_empty(&r.app_id),
        permission,
        state,
        expiring_before,
        show_deleted: r.show_deleted,
        after: None,
        limit: page_size + 1,
    };
    let fingerprint = filter_fingerprint(&query);
    if !r.page_token.is_empty() {
        match decode_token(&r.page_token) {
            Some(token) if token.f == fingerprint => query.after = Some((token.k, token.i.unwrap_or(Uuid::max()))),
            Some(_) => v.add("page_token", "was issued for different filters"),
            None => v.add("page_token", "is malformed"),
        }
    }
    v.finish()?;
    Ok(ListPage { query, page_size, fingerprint })
}

impl ListPage {
    /// The response for `rows` (what the query returned): at most a page of keys, and the token of
    /// the next page (empty at the end).
    ///
    /// # Errors
    /// INTERNAL if the token cannot be encoded (a bug).
    pub fn response(&self, mut rows: Vec<(ApiKey, String)>) -> Result<pb::ListApiKeysResponse> {
        let more = rows.len() as u64 > self.page_size;
        rows.truncate(usize::try_from(self.page_size).unwrap_or(usize::MAX));
        let next_page_token = match rows.last() {
            Some((key, name_key)) if more => encode_token(name_key.clone(), Some(key.id.0), &self.fingerprint)?,
            _ => String::new(),
        };
        Ok(pb::ListApiKeysResponse { api_keys: rows.into_iter().map(|(key, _)| key.into()).collect(), next_page_token })
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
        let now = chrono::Utc::now();
        let state = match key.state(now) {
            KeyState::Active => pb::api_key::State::Active,
            KeyState::Disabled => pb::api_key::State::Disabled,
            KeyState::Locked => pb::api_key::State::Locked,
            KeyState::Expired => pb::api_key::State::Expired,
            KeyState::Deleted => pb::api_key::State::Deleted,
        };
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
            state: state.into(),
            failed_attempts: key.failed_attempts,
            last_failure_time: key.last_failure_time.map(timestamp),
            expire_time: key.expire_time.map(timestamp),
            previous_secret_expire_time: key.previous_secret_expire_time.filter(|at| *at > now).map(timestamp),
            delete_time: key.delete_time.map(timestamp),
            purge_time: key.purge_time.map(timestamp),
            allowed_cidrs: key.allowed_cidrs,
            rate_limit: key.rate_limit.map(Into::into),
            last_used_time: key.last_used_time.map(timestamp),
            last_used_address: key.last_used_address,
            last_used_agent: key.last_used_agent,
        }
    }
}

impl From<domain::RateLimit> for pb::RateLimit {
    fn from(limit: domain::RateLimit) -> Self {
        Self {
            requests: i64::try_from(limit.requests).unwrap_or(i64::MAX),
            window: Some(prost_types::Duration {
                seconds: i64::try_from(limit.window.as_secs()).unwrap_or(i64::MAX),
                nanos: i32::try_from(limit.window.subsec_nanos()).unwrap_or(0),
            }),
        }
    }
}

impl From<audit_event::Model> for pb::AuditEvent {
    fn from(e: audit_event::Model) -> Self {
        Self {
            actor: Some(
                Actor { kind: ActorType::parse(&e.actor_type), id: e.actor_id, display_name: e.actor_name }.into(),
            ),
            id: e.id.to_string(),
            action: e.action,
            key_id: e.key_id.to_string(),
            changed_fields: serde_json::from_str(&e.changed_fields).unwrap_or_default(),
            time: Some(timestamp(e.time)),
            changes: field_changes(&e.changes),
            request_id: e.request_id,
            source_address: e.source_address,
        }
    }
}

/// Where a WatchAuditEvents request starts: after its cursor, at its start time, or now.
///
/// # Errors
/// INVALID_ARGUMENT naming `cursor` or `start_time`.
pub fn audit_watch_start(r: &pb::WatchAuditEventsRequest) -> Result<crate::audit::Start> {
    use crate::audit::{AuditCursor, Start};
    match (r.cursor.is_empty(), &r.start_time) {
        (false, Some(_)) => Err(Error::invalid("start_time", "give either cursor or start_time")),
        (false, None) => Ok(Start::After(AuditCursor::decode(&r.cursor, "cursor")?)),
        (true, Some(t)) => Ok(Start::At(time(t, "start_time").map_err(|v| Error::InvalidArgument(vec![v]))?)),
        (true, None) => Ok(Start::At(chrono::Utc::now())),
    }
}

/// The stored `changes` of an audit event as messages: each value as JSON text.
fn field_changes(stored: &str) -> Vec<pb::FieldChange> {
    let list: Vec<serde_json::Value> = serde_json::from_str(stored).unwrap_or_default();
    list.iter()
        .map(|change| pb::FieldChange {
            field: change["field"].as_str().unwrap_or_default().to_owned(),
            old_value: change["old"].to_string(),
            new_value: change["new"].to_string(),
        })
        .collect()
}

/// The actions an audit event can record.
const AUDIT_ACTIONS: &[&str] = &[
    "CREATE",
    "BOOTSTRAP",
    "UPDATE",
    "REGENERATE_SECRET",
    "DELETE",
    "UNDELETE",
    "PURGE",
    "LOCK",
    "UNLOCK",
    "DISABLE",
    "ENABLE",
    "EXPIRY_WARNING",
    "EXPIRY_LAST_WARNING",
];

/// A validated ListAuditEvents: the store query (one row more than the page) and what the next
/// page token needs.
#[derive(Debug)]
pub struct AuditPage {
    /// The query.
    pub query: AuditQuery,
    page_size: u64,
    fingerprint: String,
}

/// A validated ListAuditEvents.
///
/// # Errors
/// INVALID_ARGUMENT naming every bad field.
pub fn audit_list(r: pb::ListAuditEventsRequest) -> Result<AuditPage> {
    let mut v = Violations::default();
    let page_size = page_size(r.page_size, &mut v);
    let key_id = (!r.key_id.trim().is_empty())
        .then(|| {
            v.check(
                key_id(&r.key_id, "key_id").map_err(|_| crate::error::FieldViolation::new("key_id", "must be a UUID")),
            )
        })
        .flatten();
    let action = (!r.action.is_empty()).then(|| r.action.trim().to_ascii_uppercase());
    if let Some(action) = &action
        && !AUDIT_ACTIONS.contains(&action.as_str())
    {
        v.add("action", format!("must be one of {}", AUDIT_ACTIONS.join(", ")));
    }
    let actor_id = (!r.actor_id.trim().is_empty()).then(|| r.actor_id.trim().to_owned());
    if actor_id.as_ref().is_some_and(|a| a.chars().count() > 200 || a.chars().any(char::is_control)) {
        v.add("actor_id", "is not an actor ID");
    }
    let start = r.start_time.as_ref().and_then(|t| v.check(time(t, "start_time")));
    let end = r.end_time.as_ref().and_then(|t| v.check(time(t, "end_time")));
    if let (Some(start), Some(end)) = (start, end)
        && start >= end
    {
        v.add("end_time", "must be after start_time");
    }
    let mut query = AuditQuery { key_id, actor_id, action, start, end, before: None, limit: page_size + 1 };
    let fingerprint = fingerprint(&[
        query.key_id.map(|k| k.to_string()),
        query.actor_id.clone(),
        query.action.clone(),
        query.start.map(|t| t.to_rfc3339()),
        query.end.map(|t| t.to_rfc3339()),
    ]);
    if !r.page_token.is_empty() {
        let position = decode_token(&r.page_token).filter(|t| t.f == fingerprint).and_then(|t| {
            let (time, id) = t.k.split_once('|')?;
            Some((chrono::DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&chrono::Utc), id.parse().ok()?))
        });
        match position {
            Some(position) => query.before = Some(position),
            None => v.add("page_token", "is malformed or was issued for different filters"),
        }
    }
    v.finish()?;
    Ok(AuditPage { query, page_size, fingerprint })
}

impl AuditPage {
    /// The response for `rows` (what the query returned): at most a page of events, and the token of
    /// the next page (empty at the end).
    ///
    /// # Errors
    /// INTERNAL if the token cannot be encoded (a bug).
    pub fn response(&self, mut rows: Vec<audit_event::Model>) -> Result<pb::ListAuditEventsResponse> {
        let more = rows.len() as u64 > self.page_size;
        rows.truncate(usize::try_from(self.page_size).unwrap_or(usize::MAX));
        let next_page_token = match rows.last() {
            Some(last) if more => encode_token(
                format!("{}|{}", last.time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true), last.id),
                None,
                &self.fingerprint,
            )?,
            _ => String::new(),
        };
        let audit_events = rows.into_iter().map(pb::AuditEvent::from).collect();
        Ok(pb::ListAuditEventsResponse { audit_events, next_page_token })
    }
}
