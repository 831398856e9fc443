//! The domain: API key accounts, actors, the permission catalog, and the rules that apply to them
//! (field validation, the escalation rule, app-managed keys, what API key accounts may not do).
//! Transport-neutral: no protobuf, no SQL.

use chrono::{DateTime, Utc};
use derive_more::{Display, From, FromStr};
use unicode_normalization::UnicodeNormalization as _;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};
use uuid::Uuid;

use crate::{
    auth::{
        lacking,
        restrictions::{Cidr, MAX_CIDRS},
    },
    error::{Error, FieldViolation, Result},
};

pub mod catalog;

pub use catalog::{ADMIN_PERMISSION, Catalog, Permission, USAGE_REPORT_PERMISSION, is_permission_name};

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 100;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Longest app ID, in characters.
pub const MAX_APP_ID_CHARS: usize = 100;
/// Most permissions one Authenticate call may require (the catalog is far smaller).
pub const MAX_REQUIRED_PERMISSIONS: usize = 256;

/// An API key account's ID: server-generated, never changes, not secret. Typed, so it cannot be
/// swapped with an org ID; parsed once, at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Display, From, FromStr)]
pub struct KeyId(pub Uuid);

/// An organization's ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Display, From, FromStr)]
pub struct OrgId(pub Uuid);

/// Kinds of actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorType {
    /// An API key account.
    ApiKey,
    /// A person.
    User,
    /// apikeys itself (bootstrap, offline tooling).
    System,
}

impl ActorType {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "API_KEY",
            Self::User => "USER",
            Self::System => "SYSTEM",
        }
    }

    /// Parses the stored form (unknown values read as `System`, which never grants anything).
    pub fn parse(value: &str) -> Self {
        match value {
            "API_KEY" => Self::ApiKey,
            "USER" => Self::User,
            _ => Self::System,
        }
    }
}

/// Who performs an action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// Kind.
    pub kind: ActorType,
    /// ID (key ID, user ID, or component name).
    pub id: String,
    /// Display name at the time.
    pub display_name: String,
}

impl Actor {
    /// apikeys itself.
    pub fn system(component: &str) -> Self {
        Self { kind: ActorType::System, id: component.to_owned(), display_name: component.to_owned() }
    }
}

/// The authenticated caller of an admin RPC.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Organization the caller acts in.
    pub org_id: OrgId,
    /// As whom it is recorded.
    pub actor: Actor,
    /// Permissions it holds, sorted.
    pub permissions: Vec<String>,
    /// Where the call came from, for the audit trail.
    pub origin: Origin,
    /// When the caller's credential stops being valid (a person's JWT `exp`, a key's expiry);
    /// `None`: not known to expire.
    pub expire_time: Option<DateTime<Utc>>,
}

/// Where a change came from, as the audit trail records it; empty for the system's own changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// The request's ID: the caller's `x-request-id`, else one the server made.
    pub request_id: String,
    /// The client address (the TCP peer, or the trusted `X-Forwarded-For` hop); empty if unknown.
    pub address: String,
}

/// An API key account as the domain sees it (no secret, no hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Never changes.
    pub id: KeyId,
    /// Owning organization.
    pub org_id: OrgId,
    /// Trimmed display name.
    pub display_name: String,
    /// Description.
    pub description: String,
    /// Sorted, unique permission names.
    pub permissions: Vec<String>,
    /// Owning app, if app-managed.
    pub app_id: Option<String>,
    /// Creator.
    pub created_by: Actor,
    /// Last updater.
    pub updated_by: Actor,
    /// Creation time.
    pub create_time: DateTime<Utc>,
    /// Last change.
    pub update_time: DateTime<Utc>,
    /// Incremented on every change.
    pub version: i64,
    /// Locked by too many consecutive failed authentications.
    pub locked: bool,
    /// Failed authentications since the last success, unlock or regeneration.
    pub failed_attempts: i64,
    /// When the last failed authentication happened.
    pub last_failure_time: Option<DateTime<Utc>>,
    /// When the key stops authenticating; `None`: never.
    pub expire_time: Option<DateTime<Utc>>,
    /// Disabled by an admin: refused until enabled again.
    pub disabled: bool,
    /// Until when the previous secret still authenticates (a rotation's grace period); `None`: it
    /// does not.
    pub previous_secret_expire_time: Option<DateTime<Utc>>,
    /// When the key was deleted (it is refused, and restorable until `purge_time`); `None` while
    /// it is not.
    pub delete_time: Option<DateTime<Utc>>,
    /// When a deleted key is removed for good.
    pub purge_time: Option<DateTime<Utc>>,
    /// The networks the key may be used from, canonical and sorted; empty: any.
    pub allowed_cidrs: Vec<String>,
    /// At most this many requests per window; `None`: no limit.
    pub rate_limit: Option<RateLimit>,
    /// When it was last used, as last written; `None`: never seen.
    pub last_used_time: Option<DateTime<Utc>>,
    /// The client address of that use; empty if unknown.
    pub last_used_address: String,
    /// The user agent of that use; empty if none.
    pub last_used_agent: String,
}

/// Whether a key authenticates, and if not, why (the first reason in the order of checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// It authenticates.
    Active,
    /// Disabled by an admin.
    Disabled,
    /// Locked by too many failed authentications.
    Locked,
    /// Past its expire time.
    Expired,
    /// Deleted, and restorable until its purge time.
    Deleted,
}

/// What [`KeyState::of`] reads of a key.
#[derive(Debug, Clone, Copy, Default)]
pub struct StateFlags {
    /// Deleted.
    pub deleted: bool,
    /// Disabled by an admin.
    pub disabled: bool,
    /// Locked by failures.
    pub locked: bool,
    /// When it expires.
    pub expire_time: Option<DateTime<Utc>>,
}

impl KeyState {
    /// The state's name as the API shows it, without the `STATE_` prefix: `ACTIVE`, `DELETED`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Disabled => "DISABLED",
            Self::Locked => "LOCKED",
            Self::Expired => "EXPIRED",
            Self::Deleted => "DELETED",
        }
    }

    /// The state of a key with these flags at `now`: the first reason in the order of checks
    /// (deleted, disabled, locked, expired).
    pub fn of(flags: StateFlags, now: DateTime<Utc>) -> Self {
        let StateFlags { deleted, disabled, locked, expire_time } = flags;
        if deleted {
            Self::Deleted
        } else if disabled {
            Self::Disabled
        } else if locked {
            Self::Locked
        } else if expire_time.is_some_and(|at| at <= now) {
            Self::Expired
        } else {
            Self::Active
        }
    }
}

/// The rules an organization sets for its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrgPolicy {
    /// Consecutive failed authentications after which a key locks; 0: never.
    pub lockout_threshold: u32,
    /// Longest lifetime of a key: new keys without an expire time get `now + max`, and an expire
    /// time beyond `now + max` is refused. `None`: no maximum.
    pub max_key_lifetime: Option<std::time::Duration>,
}

impl Default for OrgPolicy {
    fn default() -> Self {
        Self { lockout_threshold: DEFAULT_LOCKOUT_THRESHOLD, max_key_lifetime: None }
    }
}

impl OrgPolicy {
    /// The expire time a key gets at `now` when the admin asked for `requested` (`None`: no
    /// expiry) in request field `field`: the requested time if it lies in the future and within the
    /// maximum lifetime. Without a request, a new key (`creating`) gets `now + max` if there is a
    /// maximum, while removing an existing key's expiry under a maximum is refused.
    ///
    /// # Errors
    /// INVALID_ARGUMENT naming `field`: in the past, beyond the maximum lifetime, or removed under
    /// a maximum.
    pub fn expire_time(
        &self,
        requested: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        field: &str,
        creating: bool,
    ) -> Result<Option<DateTime<Utc>>> {
        let latest = self.max_key_lifetime.and_then(|max| chrono::Duration::from_std(max).ok()).map(|max| now + max);
        match (requested, latest) {
            (Some(at), _) if at <= now => Err(Error::invalid(field, "must be in the future")),
            (Some(at), Some(latest)) if at > latest => Err(Error::invalid(
                field,
                format!("must be at most the organization's maximum key lifetime from now ({})", latest.to_rfc3339()),
            )),
            (Some(at), _) => Ok(Some(at)),
            (None, Some(_)) if !creating => {
                Err(Error::invalid(field, "is required: the organization's policy sets a maximum key lifetime"))
            }
            (None, latest) => Ok(latest),
        }
    }
}

/// The longest grace period of a regenerated key's previous secret.
pub const MAX_PREVIOUS_SECRET_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 60 * 60);

/// The lockout threshold of new organizations: NIST SP 800-63B's ceiling for consecutive failures.
pub const DEFAULT_LOCKOUT_THRESHOLD: u32 = 100;

impl ApiKey {
    /// Whether the key authenticates at `now`, and if not, the first reason in the order of checks
    /// (deleted, disabled, locked, expired).
    pub fn state(&self, now: DateTime<Utc>) -> KeyState {
        let flags = StateFlags {
            deleted: self.delete_time.is_some(),
            disabled: self.disabled,
            locked: self.locked,
            expire_time: self.expire_time,
        };
        KeyState::of(flags, now)
    }

    /// The opaque etag of this version.
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.version)
    }

    /// Checks `etag` (empty means "no condition").
    ///
    /// # Errors
    /// ABORTED on mismatch.
    pub fn check_etag(&self, etag: &str) -> Result<()> {
        if etag.is_empty() || etag == self.etag() { Ok(()) } else { Err(Error::EtagMismatch) }
    }

    /// Refuses `action` on an app-managed key unless the caller acknowledged the impact.
    ///
    /// # Errors
    /// FAILED_PRECONDITION naming the app.
    pub fn check_app_impact(&self, acknowledged: bool, action: &'static str) -> Result<()> {
        match &self.app_id {
            Some(app_id) if !acknowledged => {
                Err(Error::AppManagedKey { key_id: self.id.to_string(), app_id: app_id.clone(), action })
            }
            _ => Ok(()),
        }
    }
}

/// A validated display name: as shown, and the folded key that enforces uniqueness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName {
    /// Trimmed, in Unicode NFC.
    pub shown: String,
    /// [`name_key`] of `shown`: the uniqueness and ordering key.
    pub key: String,
}

/// A name-like field normalized to NFC and trimmed; refused if longer than `max` characters or if
/// it holds control characters or format characters (Unicode category Cf: bidi overrides,
/// zero-width joiners and spaces, ...), which let one name pass for another in lists and audit logs.
fn name_like(raw: &str, field: &str, max: usize) -> Result<String, FieldViolation> {
    let normalized: String = raw.nfc().collect();
    let text = normalized.trim();
    if text.chars().count() > max {
        return Err(FieldViolation::new(field, format!("must be at most {max} characters")));
    }
    if text.chars().any(char::is_control) {
        return Err(FieldViolation::new(field, "must not contain control characters"));
    }
    if text.chars().any(|c| c.general_category() == GeneralCategory::Format) {
        return Err(FieldViolation::new(
            field,
            "must not contain invisible format characters (bidi controls, zero-width characters)",
        ));
    }
    Ok(text.to_owned())
}

/// Validates a display name: normalized to NFC, trimmed, 1 to 100 characters, no control or format
/// characters.
///
/// # Errors
/// INVALID_ARGUMENT naming `field`.
pub fn display_name(raw: &str, field: &str) -> Result<DisplayName, FieldViolation> {
    let shown = name_like(raw, field, MAX_DISPLAY_NAME_CHARS)?;
    if shown.is_empty() {
        return Err(FieldViolation::new(field, "must not be empty"));
    }
    Ok(DisplayName { key: name_key(&shown), shown })
}

/// The form used for uniqueness, ordering and `name_contains` matching: Unicode canonical caseless
/// matching (full case folding of the canonical decomposition), stored in NFC. Two names that look
/// the same because they differ only in case or in composed vs decomposed accents get the same key.
pub fn name_key(text: &str) -> String {
    let decomposed: String = text.nfd().collect();
    caseless::default_case_fold_str(&decomposed).nfc().collect()
}

/// Validates a description: at most 1000 characters.
///
/// # Errors
/// INVALID_ARGUMENT naming `field`.
pub fn description(raw: &str, field: &str) -> Result<String, FieldViolation> {
    if raw.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(FieldViolation::new(field, format!("must be at most {MAX_DESCRIPTION_CHARS} characters")));
    }
    if raw.chars().any(|c| c.is_control() && c != '\n' && c != '\t' && c != '\r') {
        return Err(FieldViolation::new(field, "must not contain control characters other than line breaks and tabs"));
    }
    Ok(raw.to_owned())
}

/// Validates an optional app ID (empty means none): normalized to NFC, trimmed, at most 100
/// characters, no control or format characters.
///
/// # Errors
/// INVALID_ARGUMENT naming `field`.
pub fn app_id(raw: &str, field: &str) -> Result<Option<String>, FieldViolation> {
    let app = name_like(raw, field, MAX_APP_ID_CHARS)?;
    Ok((!app.is_empty()).then_some(app))
}

/// Validates the networks a key may be used from: at most [`MAX_CIDRS`], each in CIDR notation
/// without host bits (see [`Cidr`]); returns them in canonical form, sorted and deduplicated.
///
/// # Errors
/// One violation per bad network, as `field[i]`, or one for `field` if there are too many.
pub fn allowed_cidrs(raw: &[String], field: &str) -> Result<Vec<String>, Vec<FieldViolation>> {
    if raw.len() > MAX_CIDRS {
        return Err(vec![FieldViolation::new(field, format!("at most {MAX_CIDRS} networks are allowed"))]);
    }
    let mut violations = Vec::new();
    let mut networks = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        match text.trim().parse::<Cidr>() {
            Ok(cidr) => networks.push(cidr.to_string()),
            Err(reason) => violations.push(FieldViolation::new(format!("{field}[{i}]"), reason)),
        }
    }
    if !violations.is_empty() {
        return Err(violations);
    }
    networks.sort();
    networks.dedup();
    Ok(networks)
}

/// A key's rate limit: at most `requests` per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per window.
    pub requests: u64,
    /// The window.
    pub window: std::time::Duration,
}

/// Most requests per window of a rate limit.
pub const MAX_RATE_LIMIT_REQUESTS: u64 = 1_000_000_000;
/// Shortest rate-limit window.
pub const MIN_RATE_LIMIT_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);
/// Longest rate-limit window.
pub const MAX_RATE_LIMIT_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Validates a rate limit of `requests` per `window` (`None`: not given) in request field `field`.
///
/// # Errors
/// One violation per bad part, as `field.requests` / `field.window`.
pub fn rate_limit(
    requests: i64,
    window: Option<std::time::Duration>,
    field: &str,
) -> Result<RateLimit, Vec<FieldViolation>> {
    let mut violations = Vec::new();
    let requests = u64::try_from(requests).ok().filter(|r| (1..=MAX_RATE_LIMIT_REQUESTS).contains(r));
    if requests.is_none() {
        violations.push(FieldViolation::new(
            format!("{field}.requests"),
            format!("must be between 1 and {MAX_RATE_LIMIT_REQUESTS}"),
        ));
    }
    let window = window.filter(|w| (MIN_RATE_LIMIT_WINDOW..=MAX_RATE_LIMIT_WINDOW).contains(w));
    if window.is_none() {
        violations.push(FieldViolation::new(format!("{field}.window"), "must be between 1 second and 1 day"));
    }
    match (requests, window) {
        (Some(requests), Some(window)) => Ok(RateLimit { requests, window }),
        _ => Err(violations),
    }
}

/// Validates permission names against the catalog; returns them sorted and deduplicated.
///
/// # Errors
/// One violation per unknown name, as `field[i]`.
pub fn permissions(catalog: &Catalog, raw: &[String], field: &str) -> Result<Vec<String>, Vec<FieldViolation>> {
    let violations: Vec<FieldViolation> = raw
        .iter()
        .enumerate()
        .filter(|(_, name)| !catalog.contains(name))
        .map(|(i, name)| FieldViolation::new(format!("{field}[{i}]"), format!("unknown permission {name:?}")))
        .collect();
    if !violations.is_empty() {
        return Err(violations);
    }
    let mut names = raw.to_vec();
    names.sort();
    names.dedup();
    Ok(names)
}

/// The escalation rule: a caller can grant only permissions it holds itself. `granted` are the
/// permissions being added.
///
/// # Errors
/// PERMISSION_DENIED naming the permissions the caller lacks.
pub fn check_grant(caller: &Caller, granted: &[String]) -> Result<()> {
    let lacking = beyond(caller, granted);
    if lacking.is_empty() { Ok(()) } else { Err(Error::Escalation(lacking)) }
}

/// The permissions of `wanted` that `caller` may neither grant nor manage: those it does not
/// hold, except that an admin ([`ADMIN_PERMISSION`]) counts as holding [`USAGE_REPORT_PERMISSION`],
/// a lesser right over the same keys (so admin keys made before that permission existed can grant
/// it to consumer services).
fn beyond(caller: &Caller, wanted: &[String]) -> Vec<String> {
    let mut lacking = lacking(&caller.permissions, wanted.iter().map(String::as_str));
    lacking.retain(|p| !may_grant(&caller.permissions, p));
    lacking
}

/// Whether whoever holds `held` (sorted) may grant `permission`, and manage keys holding it: the
/// rule of [`check_grant`] and [`check_manage`] for one permission (the console disables the
/// others).
pub fn may_grant(held: &[String], permission: &str) -> bool {
    let holds = |name: &str| held.binary_search_by(|p| p.as_str().cmp(name)).is_ok();
    holds(permission) || permission == USAGE_REPORT_PERMISSION && holds(ADMIN_PERMISSION)
}

/// The management rule: regenerating, deleting or changing the permissions of a key needs every
/// permission the key holds, so a weaker admin cannot take over or disarm a stronger key.
///
/// # Errors
/// PERMISSION_DENIED naming the key's permissions the caller lacks.
pub fn check_manage(caller: &Caller, key: &ApiKey) -> Result<()> {
    let lacking = beyond(caller, &key.permissions);
    if lacking.is_empty() { Ok(()) } else { Err(Error::KeyOutranksCaller(lacking)) }
}

/// The permission rule of an update: the caller may change the permission set of a key it manages
/// only by granting permissions it holds itself. `new` is the validated new set.
///
/// # Errors
/// PERMISSION_DENIED naming the added permissions the caller lacks.
pub fn check_permission_change(caller: &Caller, key: &ApiKey, new: &[String]) -> Result<()> {
    let added = lacking(&key.permissions, new.iter().map(String::as_str));
    check_grant(caller, &added)
}

/// Collects field violations into one INVALID_ARGUMENT.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// Keeps the value or records the violation.
    pub fn check<T>(&mut self, result: Result<T, FieldViolation>) -> Option<T> {
        result.map_err(|v| self.0.push(v)).ok()
    }

    /// Like [`Violations::check`] for checks that report several violations.
    pub fn check_all<T>(&mut self, result: Result<T, Vec<FieldViolation>>) -> Option<T> {
        result.map_err(|v| self.0.extend(v)).ok()
    }

    /// Records a violation.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation::new(field, description));
    }

    /// Ok if nothing was recorded.
    ///
    /// # Errors
    /// INVALID_ARGUMENT with every recorded violation.
    pub fn finish(self) -> Result<()> {
        if self.0.is_empty() { Ok(()) } else { Err(Error::InvalidArgument(self.0)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_follows_the_maximum_lifetime() {
        let now = Utc::now();
        let (hour, day) = (chrono::Duration::hours(1), chrono::Duration::days(1));
        let free = OrgPolicy::default();
        assert_eq!(free.expire_time(None, now, "f", true).unwrap(), None);
        assert_eq!(free.expire_time(None, now, "f", false).unwrap(), None, "no maximum: removing is fine");
        assert_eq!(free.expire_time(Some(now + day), now, "f", true).unwrap(), Some(now + day));
        let past = free.expire_time(Some(now), now, "f", true).unwrap_err();
        assert!(matches!(&past, Error::InvalidArgument(v) if v[0].field == "f"), "{past:?}");

        let capped = OrgPolicy { max_key_lifetime: Some(std::time::Duration::from_secs(3600)), ..OrgPolicy::default() };
        assert_eq!(capped.expire_time(None, now, "f", true).unwrap(), Some(now + hour), "defaulted on creation");
        assert!(capped.expire_time(None, now, "f", false).is_err(), "not removable under a maximum");
        assert!(capped.expire_time(Some(now + day), now, "f", true).is_err(), "beyond the maximum");
        assert_eq!(capped.expire_time(Some(now + hour), now, "f", false).unwrap(), Some(now + hour));
    }

    #[test]
    fn display_names() {
        assert_eq!(
            display_name("  Build Bot ", "f").unwrap(),
            DisplayName { shown: "Build Bot".into(), key: "build bot".into() }
        );
        assert!(display_name("   ", "f").is_err());
        assert!(display_name(&"x".repeat(101), "f").is_err());
        assert!(display_name(&"é".repeat(100), "f").is_ok(), "limit is in characters, not bytes");
        assert_eq!(display_name("a\u{7}b", "display_name").unwrap_err().field, "display_name");
    }

    #[test]
    fn names_that_look_the_same_share_a_key() {
        let composed = display_name("Café Ingest", "f").unwrap();
        let decomposed = display_name("CAFE\u{301} INGEST", "f").unwrap();
        assert_eq!(composed.key, decomposed.key);
        assert_eq!(decomposed.shown, "CAF\u{c9} INGEST", "stored in NFC");
        assert_eq!(name_key("Straße"), name_key("STRASSE"), "full case folding");
        assert_ne!(name_key("Cafe"), name_key("Café"));
    }

    #[test]
    fn format_characters_are_refused_in_names_and_app_ids() {
        for hidden in ["\u{202e}", "\u{200b}", "\u{200d}", "\u{2066}", "\u{feff}", "\u{ad}"] {
            let name = format!("admin{hidden}bot");
            assert!(display_name(&name, "display_name").is_err(), "{name:?}");
            assert_eq!(app_id(&name, "app_id").unwrap_err().field, "app_id", "{name:?}");
        }
        assert_eq!(app_id("  statuspage ", "app_id").unwrap().as_deref(), Some("statuspage"));
    }

    #[test]
    fn grants_are_limited_to_held_permissions() {
        let caller = Caller {
            origin: Origin::default(),
            org_id: OrgId(Uuid::new_v4()),
            actor: Actor::system("t"),
            permissions: vec!["a".into(), "c".into()],
            expire_time: None,
        };
        assert!(check_grant(&caller, &["a".into(), "c".into()]).is_ok());
        match check_grant(&caller, &["a".into(), "b".into()]) {
            Err(Error::Escalation(lacking)) => assert_eq!(lacking, vec!["b".to_owned()]),
            other => panic!("{other:?}"),
        }
        // An admin may grant the report permission without holding it; nobody else may.
        let report = vec![USAGE_REPORT_PERMISSION.to_owned()];
        match check_grant(&caller, &report) {
            Err(Error::Escalation(lacking)) => assert_eq!(lacking, report),
            other => panic!("{other:?}"),
        }
        let admin = Caller { permissions: vec![ADMIN_PERMISSION.into()], ..caller };
        assert!(check_grant(&admin, &report).is_ok());
        assert!(beyond(&admin, &report).is_empty(), "check_manage's rule too");
    }

    #[test]
    fn the_state_is_the_first_reason_in_the_order_of_checks() {
        let now = Utc::now();
        let past = Some(now - chrono::Duration::seconds(1));
        let all = StateFlags { deleted: true, disabled: true, locked: true, expire_time: past };
        assert_eq!(KeyState::of(all, now), KeyState::Deleted);
        assert_eq!(KeyState::of(StateFlags { deleted: false, ..all }, now), KeyState::Disabled);
        assert_eq!(KeyState::of(StateFlags { deleted: false, disabled: false, ..all }, now), KeyState::Locked);
        assert_eq!(KeyState::of(StateFlags { expire_time: past, ..StateFlags::default() }, now), KeyState::Expired);
        let future = Some(now + chrono::Duration::seconds(60));
        assert_eq!(KeyState::of(StateFlags { expire_time: future, ..StateFlags::default() }, now), KeyState::Active);
    }
}
