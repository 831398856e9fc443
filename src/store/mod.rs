//! Persistence with sea-orm: connection setup (SQLite by default, PostgreSQL in production),
//! migrations, and the repository of orgs, keys, permissions and audit events.
//!
//! Every change of a key is one transaction ([`Store::mutate`]) that first locks the key's row, then
//! decides on the current state, writes, and records the audit event. Database errors are
//! classified in one place, [`db_error`].

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, DbErr, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, SqlErr, Statement,
    sea_query::{Expr, LikeExpr, Query},
    sqlx,
};
use sea_orm_migration::MigratorTrait;
use uuid::Uuid;

use crate::{
    auth::hashing::SecretHash,
    domain::{Actor, ActorType, ApiKey, DisplayName, KeyId, KeyState, OrgId, OrgPolicy, Origin, RateLimit, StateFlags},
    error::{Error, Result},
};

pub mod breaker;
pub mod entities;
pub mod migration;

use breaker::{Breaker, Guarded};
use entities::{api_key, api_key_permission, audit_event, change_log, key_change, org, permission_usage};

/// The PostgreSQL notification channel on which every committed change of a key is announced, with
/// the key ID as payload.
pub const CHANGE_CHANNEL: &str = "apikeys_key_changes";

/// Serializes the writers of the change log on PostgreSQL (a transaction-scoped advisory lock taken
/// just before the log row is inserted), so log positions commit in order and a reader that has seen
/// position `n` has seen every committed change before it. SQLite has one writer at a time anyway.
const CHANGE_LOG_LOCK: i64 = 0x6170_696b_6579_735f;

/// One entry of the change log: a key that changed, at position `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyChange {
    /// Position in the log.
    pub seq: i64,
    /// The key.
    pub key_id: KeyId,
    /// Its org.
    pub org_id: OrgId,
}

/// Where the change log stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogState {
    /// This database's log: cursors of another one are not positions in it.
    pub instance: Uuid,
    /// The last position written (or pruned, when the log is empty).
    pub head: i64,
    /// Positions up to this one are pruned; a reader behind it may have missed changes.
    pub pruned_through: i64,
}

/// An organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    /// ID.
    pub id: OrgId,
    /// Unique name.
    pub name: String,
    /// Group owning incidents created without an owner by the org's API keys.
    pub default_group: String,
}

impl From<org::Model> for Org {
    fn from(m: org::Model) -> Self {
        Self { id: m.id.into(), name: m.name, default_group: m.default_group }
    }
}

/// What a verification needs before hashing: the hash, and whether the key is locked.
#[derive(Debug, Clone)]
pub struct StoredSecret {
    /// The secret's hash.
    pub hash: SecretHash,
    /// Locked, disabled or expired: refused without hashing.
    pub refused: bool,
    /// The previous secret's hash, while its grace period lasts.
    pub previous: Option<SecretHash>,
    /// Failed authentications recorded so far.
    pub failed_attempts: i64,
}

/// Authentication outcomes of one key since the last batch was written.
#[derive(Debug, Clone)]
pub struct Outcomes {
    /// The key.
    pub key_id: KeyId,
    /// A success came first: the stored count restarts from `failures`.
    pub reset: bool,
    /// Failures since then.
    pub failures: u64,
    /// When the last of them happened.
    pub last_failure: Option<chrono::DateTime<Utc>>,
}

/// The columns [`Store::find_secret_hash`] reads.
type SecretRow = (
    String,
    bool,
    bool,
    Option<chrono::DateTime<Utc>>,
    i64,
    Option<String>,
    Option<chrono::DateTime<Utc>>,
    Option<chrono::DateTime<Utc>>,
);

/// What Authenticate needs about a key: the key, its hash and its org's default group.
pub struct AuthRecord {
    /// The key.
    pub key: ApiKey,
    /// The secret's hash.
    pub secret_hash: SecretHash,
    /// The org's default group.
    pub default_group: String,
    /// Set when the secret that matched is the previous one: until when it works.
    pub previous_until: Option<chrono::DateTime<Utc>>,
}

/// A new key, validated.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Server-generated ID (known before the insert, so a token can be prepared first).
    pub id: KeyId,
    /// Owning org.
    pub org_id: OrgId,
    /// Display name, with its uniqueness key.
    pub display_name: DisplayName,
    /// Description.
    pub description: String,
    /// Sorted, unique permissions.
    pub permissions: Vec<String>,
    /// Owning app.
    pub app_id: Option<String>,
    /// The secret's hash.
    pub secret_hash: SecretHash,
    /// When it stops authenticating; `None`: never.
    pub expire_time: Option<chrono::DateTime<Utc>>,
    /// Networks it may be used from (canonical, sorted); empty: any.
    pub allowed_cidrs: Vec<String>,
    /// Rate limit; `None`: none.
    pub rate_limit: Option<RateLimit>,
    /// Creator.
    pub actor: Actor,
    /// Where the creation came from.
    pub origin: Origin,
}

/// The changes of an update; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct KeyChanges {
    /// New display name.
    pub display_name: Option<DisplayName>,
    /// New description.
    pub description: Option<String>,
    /// New permission set (sorted, unique).
    pub permissions: Option<Vec<String>>,
    /// New expire time (`Some(None)`: never expires).
    pub expire_time: Option<Option<chrono::DateTime<Utc>>>,
    /// New networks (canonical, sorted; empty: any).
    pub allowed_cidrs: Option<Vec<String>>,
    /// New rate limit (`Some(None)`: none).
    pub rate_limit: Option<Option<RateLimit>>,
}

impl KeyChanges {
    fn changed_fields(&self) -> Vec<&'static str> {
        let mut fields = Vec::new();
        if self.expire_time.is_some() {
            fields.push("expire_time");
        }
        if self.display_name.is_some() {
            fields.push("display_name");
        }
        if self.description.is_some() {
            fields.push("description");
        }
        if self.permissions.is_some() {
            fields.push("permissions");
        }
        if self.allowed_cidrs.is_some() {
            fields.push("allowed_cidrs");
        }
        if self.rate_limit.is_some() {
            fields.push("rate_limit");
        }
        fields
    }
}

/// What [`Store::mutate`] does to the key it locked.
#[derive(Debug)]
pub enum Change {
    /// Apply these field changes.
    Update(KeyChanges),
    /// Replace the secret hash (which also unlocks the key), keeping the current one valid until
    /// the given time if there is one (a grace period; it ends any earlier one).
    ReplaceSecret(SecretHash, Option<chrono::DateTime<Utc>>),
    /// Unlock the key, keeping its secret.
    Unlock,
    /// Disable (`true`) or enable (`false`) the key, keeping its secret.
    SetDisabled(bool),
    /// Delete the key (soft: refused at once, restorable until the given purge time).
    Delete(chrono::DateTime<Utc>),
    /// Restore a deleted key.
    Undelete,
}

/// Filters and position of a list query.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Case-folded substring of the display name.
    pub name_contains: Option<String>,
    /// Owning app.
    pub app_id: Option<String>,
    /// A permission the keys must hold.
    pub permission: Option<String>,
    /// The state the keys must be in (at `Utc::now()`).
    pub state: Option<KeyState>,
    /// Only keys that expire before this time.
    pub expiring_before: Option<chrono::DateTime<Utc>>,
    /// Also deleted keys (implied by `state` [`KeyState::Deleted`]).
    pub show_deleted: bool,
    /// Keyset position: the (name key, id) of the last key of the previous page.
    pub after: Option<(String, Uuid)>,
    /// Page size.
    pub limit: u64,
}

/// Filters and position of an audit-trail query, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only events of this key.
    pub key_id: Option<KeyId>,
    /// Only events by this actor ID.
    pub actor_id: Option<String>,
    /// Only events with this action.
    pub action: Option<String>,
    /// Only events at or after this time.
    pub start: Option<chrono::DateTime<Utc>>,
    /// Only events before this time.
    pub end: Option<chrono::DateTime<Utc>>,
    /// Keyset position: the (time, id) of the last event of the previous page.
    pub before: Option<(chrono::DateTime<Utc>, Uuid)>,
    /// Page size.
    pub limit: u64,
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://path?mode=rwc` or `postgres://...`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before UNAVAILABLE.
    pub acquire_timeout: Duration,
}

/// The repository. Cheap to clone (the pool is shared).
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    breaker: Arc<Breaker>,
}

/// Classifies a database error: unreachable backends, and storage that cannot take writes (a
/// full disk, a read-only file system), are UNAVAILABLE; anything else is INTERNAL (logged, never
/// shown). Unique violations are handled by the callers that expect them.
pub fn db_error(error: DbErr) -> Error {
    if breaker::unreachable(&error) {
        tracing::warn!(error = %error, "database unavailable");
        Error::Unavailable("database")
    } else if cannot_write(&error) {
        tracing::error!(error = %error, "the database cannot take writes (disk full or read-only?)");
        Error::Unavailable("database storage")
    } else {
        Error::internal(format!("database: {error}"))
    }
}

/// Whether a pooled SQLite connection is outside any transaction, as it must be to be handed out.
/// One whose COMMIT failed (a full disk) can be left inside its transaction with sqlx none the
/// wiser; reused, it would make later writes look committed to their callers and be lost, and
/// keep its reads on an old snapshot. Such a connection is discarded (the pool opens another).
async fn outside_transaction(connection: &mut sqlx::sqlite::SqliteConnection) -> Result<bool, sqlx::Error> {
    let mut handle = connection.lock_handle().await?;
    // SAFETY: the locked handle gives this task exclusive use of the open database handle for the
    // duration of the call, which only reads the connection's autocommit flag.
    let autocommit = unsafe { libsqlite3_sys::sqlite3_get_autocommit(handle.as_raw_handle().as_ptr()) };
    if autocommit == 0 {
        tracing::warn!("discarding a pooled SQLite connection left inside a transaction");
    }
    Ok(autocommit != 0)
}

/// Whether `error` is the storage refusing a write: SQLite's FULL, READONLY and IOERR result codes
/// (with their extended forms), PostgreSQL's disk_full (53100), insufficient_resources (53000) and
/// read_only_sql_transaction (25006).
fn cannot_write(error: &DbErr) -> bool {
    let (DbErr::Exec(sea_orm::RuntimeErr::SqlxError(e)) | DbErr::Query(sea_orm::RuntimeErr::SqlxError(e))) = error
    else {
        return false;
    };
    let sqlx::Error::Database(database) = &**e else { return false };
    let Some(code) = database.code() else { return false };
    if database.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // The primary result code is the low byte of the extended one.
        code.parse::<u32>().is_ok_and(|extended| matches!(extended & 0xff, 8 | 10 | 13))
    } else {
        matches!(code.as_ref(), "53100" | "53000" | "25006")
    }
}

fn is_unique_violation(error: &DbErr) -> bool {
    matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

fn key_from_rows(m: api_key::Model, mut permissions: Vec<String>) -> ApiKey {
    // Byte order, whatever the database collation: the domain binary-searches these lists.
    permissions.sort_unstable();
    ApiKey {
        id: m.id.into(),
        org_id: m.org_id.into(),
        display_name: m.display_name,
        description: m.description,
        permissions,
        app_id: m.app_id,
        created_by: Actor {
            kind: ActorType::parse(&m.created_by_type),
            id: m.created_by_id,
            display_name: m.created_by_name,
        },
        updated_by: Actor {
            kind: ActorType::parse(&m.updated_by_type),
            id: m.updated_by_id,
            display_name: m.updated_by_name,
        },
        create_time: m.create_time,
        update_time: m.update_time,
        version: m.version,
        locked: m.locked,
        failed_attempts: m.failed_attempts,
        last_failure_time: m.last_failure_time,
        expire_time: m.expire_time,
        disabled: m.disabled,
        previous_secret_expire_time: m.previous_secret_hash.as_ref().and(m.previous_secret_expire_time),
        delete_time: m.delete_time,
        purge_time: m.purge_time,
        allowed_cidrs: m.allowed_cidrs.split_whitespace().map(str::to_owned).collect(),
        rate_limit: match (m.rate_limit_requests, m.rate_limit_window_ms) {
            (Some(requests), Some(window_ms)) => Some(RateLimit {
                requests: u64::try_from(requests).unwrap_or(0),
                window: Duration::from_millis(u64::try_from(window_ms).unwrap_or(0)),
            }),
            _ => None,
        },
        last_used_time: m.last_used_time,
        last_used_address: m.last_used_address,
        last_used_agent: m.last_used_agent,
    }
}

/// One audit event, as a mutation records it in its transaction.
struct Event<'a> {
    org_id: OrgId,
    actor: &'a Actor,
    origin: &'a Origin,
    action: &'a str,
    key_id: KeyId,
    /// The names of the changed fields.
    fields: &'a [&'a str],
    /// What [`changes`] made of the key before and after.
    changes: serde_json::Value,
}

/// The fields an audit event records values of, in the order of [`audited`].
const AUDITED: [&str; 8] =
    ["display_name", "description", "permissions", "app_id", "state", "expire_time", "allowed_cidrs", "rate_limit"];

/// The values of the [`AUDITED`] fields of `key` at `now`; `null` for every one without a key.
/// Never a secret or a hash.
fn audited(key: Option<&ApiKey>, now: chrono::DateTime<Utc>) -> [serde_json::Value; 8] {
    use serde_json::json;
    let Some(key) = key else { return std::array::from_fn(|_| serde_json::Value::Null) };
    let time = |t: Option<chrono::DateTime<Utc>>| t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    [
        json!(key.display_name),
        json!(key.description),
        json!(key.permissions),
        json!(key.app_id),
        json!(key.state(now).as_str()),
        json!(time(key.expire_time)),
        json!(key.allowed_cidrs),
        json!(key.rate_limit.map(|l| json!({ "requests": l.requests, "window_secs": l.window.as_secs() }))),
    ]
}

/// The audited fields that differ between `before` and `after` (`None`: the key did not exist), as
/// a JSON list of `{"field", "old", "new"}`.
fn changes(before: Option<&ApiKey>, after: Option<&ApiKey>, now: chrono::DateTime<Utc>) -> serde_json::Value {
    let changed = AUDITED
        .iter()
        .zip(audited(before, now))
        .zip(audited(after, now))
        .filter(|((_, old), new)| old != new)
        .map(|((field, old), new)| serde_json::json!({ "field": field, "old": old, "new": new }));
    serde_json::Value::Array(changed.collect())
}

/// The columns of a rate limit: requests, window in milliseconds.
fn limit_columns(limit: RateLimit) -> (i64, i64) {
    let requests = i64::try_from(limit.requests).unwrap_or(i64::MAX);
    (requests, i64::try_from(limit.window.as_millis()).unwrap_or(i64::MAX))
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `\` as escape character.
fn like_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl Store {
    /// Connects (creating the SQLite file if needed) without migrating.
    ///
    /// # Errors
    /// UNAVAILABLE if the database cannot be reached.
    pub async fn connect(config: &StoreConfig) -> Result<Self> {
        let mut options = ConnectOptions::new(config.url.clone());
        options
            .max_connections(config.max_connections)
            .min_connections(1)
            .acquire_timeout(config.acquire_timeout)
            .connect_timeout(Duration::from_secs(10))
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|opts| {
                opts.create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            })
            .map_sqlx_sqlite_before_acquire(|connection, _| Box::pin(outside_transaction(connection)));
        let db = Database::connect(options).await.map_err(db_error)?;
        Ok(Self { db, breaker: Arc::default() })
    }

    /// The pool behind the breaker ([`breaker`]): what every method runs its statements on.
    fn conn(&self) -> Guarded<'_> {
        Guarded { db: &self.db, breaker: &self.breaker }
    }

    /// Whether the database is believed reachable (the last call reached it).
    pub fn reachable(&self) -> bool {
        self.breaker.is_closed()
    }

    /// Whether a call found the database slow (out of its caller's time) or failed strangely
    /// since its last answer: a health check should look now.
    pub fn suspect(&self) -> bool {
        self.breaker.is_suspect()
    }

    /// Calls `watcher` whenever the database is found down or back (it must not block).
    pub fn watch_reachability(&self, watcher: impl Fn() + Send + Sync + 'static) {
        self.breaker.watch(watcher);
    }

    /// The underlying connection (tests use it to simulate an outage).
    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Connections the pool holds open and how many of them are idle (for metrics).
    pub fn pool_state(&self) -> Option<(u32, usize)> {
        match self.backend() {
            DatabaseBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool();
                Some((pool.size(), pool.num_idle()))
            }
            DatabaseBackend::Sqlite => {
                let pool = self.db.get_sqlite_connection_pool();
                Some((pool.size(), pool.num_idle()))
            }
            _ => None,
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> DatabaseBackend {
        self.db.get_database_backend()
    }

    /// Applies pending migrations.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn migrate(&self) -> Result<()> {
        migration::Migrator::up(&self.db, None).await.map_err(db_error)
    }

    /// Checks that the database answers.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn ping(&self) -> Result<()> {
        self.conn().ping().await.map_err(db_error)
    }

    /// Whether the database answers a ping within [`breaker::CHECK_TIMEOUT`] (a health check: no
    /// answer in time counts as unreachable, and fails calls fast until one reaches it again).
    pub async fn check(&self) -> bool {
        match tokio::time::timeout(breaker::CHECK_TIMEOUT, self.conn().ping()).await {
            Ok(result) => result.is_ok(),
            Err(_) => {
                self.breaker.trip();
                false
            }
        }
    }

    /// Whether any org exists (bootstrap runs only when none does).
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn has_orgs(&self) -> Result<bool> {
        Ok(org::Entity::find().count(&self.conn()).await.map_err(db_error)? > 0)
    }

    /// Finds an org by name.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn find_org_by_name(&self, name: &str) -> Result<Option<Org>> {
        let found = org::Entity::find().filter(org::Column::Name.eq(name)).one(&self.conn()).await.map_err(db_error)?;
        Ok(found.map(Org::from))
    }

    /// Creates an org together with its first key, in one transaction.
    ///
    /// # Errors
    /// FAILED_PRECONDITION ([`Error::OrgExists`]) if the name is taken; UNAVAILABLE or INTERNAL.
    pub async fn create_org_with_key(&self, name: &str, default_group: &str, key: NewKey) -> Result<(Org, ApiKey)> {
        let txn = self.conn().begin().await.map_err(db_error)?;
        let org = org::ActiveModel {
            id: Set(key.org_id.0),
            name: Set(name.to_owned()),
            default_group: Set(default_group.to_owned()),
            create_time: Set(Utc::now()),
            lockout_threshold: Set(i32::try_from(OrgPolicy::default().lockout_threshold).unwrap_or(i32::MAX)),
            max_key_lifetime_secs: Set(0),
        };
        if let Err(e) = org::Entity::insert(org).exec(&txn).await {
            return Err(if is_unique_violation(&e) { Error::OrgExists(name.to_owned()) } else { db_error(e) });
        }
        let created = Self::insert_key(&txn, key, "BOOTSTRAP").await?;
        txn.commit().await.map_err(db_error)?;
        let org = Org { id: created.org_id, name: name.to_owned(), default_group: default_group.to_owned() };
        Ok((org, created))
    }

    /// Creates a key with its permissions and an audit event.
    ///
    /// # Errors
    /// ALREADY_EXISTS if the display name is taken; UNAVAILABLE or INTERNAL.
    pub async fn create_key(&self, key: NewKey) -> Result<ApiKey> {
        let txn = self.conn().begin().await.map_err(db_error)?;
        let created = Self::insert_key(&txn, key, "CREATE").await?;
        txn.commit().await.map_err(db_error)?;
        Ok(created)
    }

    /// The row of a new key, created `now`.
    fn key_row(key: &NewKey, now: chrono::DateTime<Utc>) -> api_key::ActiveModel {
        api_key::ActiveModel {
            id: Set(key.id.0),
            org_id: Set(key.org_id.0),
            display_name: Set(key.display_name.shown.clone()),
            display_name_key: Set(key.display_name.key.clone()),
            description: Set(key.description.clone()),
            secret_hash: Set(key.secret_hash.0.clone()),
            app_id: Set(key.app_id.clone()),
            created_by_type: Set(key.actor.kind.as_str().to_owned()),
            created_by_id: Set(key.actor.id.clone()),
            created_by_name: Set(key.actor.display_name.clone()),
            updated_by_type: Set(key.actor.kind.as_str().to_owned()),
            updated_by_id: Set(key.actor.id.clone()),
            updated_by_name: Set(key.actor.display_name.clone()),
            create_time: Set(now),
            update_time: Set(now),
            version: Set(1),
            failed_attempts: Set(0),
            last_failure_time: Set(None),
            locked: Set(false),
            expire_time: Set(key.expire_time),
            disabled: Set(false),
            previous_secret_hash: Set(None),
            previous_secret_expire_time: Set(None),
            delete_time: Set(None),
            purge_time: Set(None),
            allowed_cidrs: Set(key.allowed_cidrs.join(" ")),
            rate_limit_requests: Set(key.rate_limit.map(|limit| limit_columns(limit).0)),
            rate_limit_window_ms: Set(key.rate_limit.map(|limit| limit_columns(limit).1)),
            last_used_time: Set(None),
            last_used_address: Set(String::new()),
            last_used_agent: Set(String::new()),
            expiry_warned: Set(0),
        }
    }

    /// The fields a new key's audit event names.
    const CREATED_FIELDS: &'static [&'static str] = &["display_name", "description", "permissions", "app_id", "secret"];

    async fn insert_key(txn: &impl ConnectionTrait, key: NewKey, action: &str) -> Result<ApiKey> {
        let inserted =
            api_key::Entity::insert(Self::key_row(&key, Utc::now())).exec_with_returning(txn).await.map_err(|e| {
                if is_unique_violation(&e) {
                    Error::DisplayNameTaken(key.display_name.shown.clone())
                } else {
                    db_error(e)
                }
            })?;
        Self::insert_permissions(txn, key.id, &key.permissions).await?;
        let created = key_from_rows(inserted, key.permissions.clone());
        let event = Event {
            org_id: key.org_id,
            actor: &key.actor,
            origin: &key.origin,
            action,
            key_id: key.id,
            fields: Self::CREATED_FIELDS,
            changes: changes(None, Some(&created), Utc::now()),
        };
        Self::audit(txn, &event).await?;
        Ok(created)
    }

    /// Creates many keys at once (an import, or seeding a benchmark), with their permissions and a
    /// `CREATE` audit event each, in one transaction: all or nothing. The hashes come with the keys,
    /// so no argon2 runs here.
    ///
    /// # Errors
    /// ALREADY_EXISTS if a display name is taken (nothing is created); UNAVAILABLE or INTERNAL.
    pub async fn create_keys(&self, keys: &[NewKey]) -> Result<()> {
        // Rows per statement: within SQLite's limit of bound parameters (the widest table has 19
        // columns).
        const CHUNK: usize = 1000;
        let txn = self.conn().begin().await.map_err(db_error)?;
        let now = Utc::now();
        for chunk in keys.chunks(CHUNK) {
            api_key::Entity::insert_many(chunk.iter().map(|key| Self::key_row(key, now))).exec(&txn).await.map_err(
                |e| {
                    if is_unique_violation(&e) {
                        Error::DisplayNameTaken("(one of the imported names)".into())
                    } else {
                        db_error(e)
                    }
                },
            )?;
            let permissions: Vec<_> =
                chunk.iter().flat_map(|key| Self::permission_rows(key.id, &key.permissions)).collect();
            for rows in permissions.chunks(CHUNK) {
                api_key_permission::Entity::insert_many(rows.to_vec()).exec(&txn).await.map_err(db_error)?;
            }
            let events = chunk
                .iter()
                .map(|key| {
                    let event = Event {
                        org_id: key.org_id,
                        actor: &key.actor,
                        origin: &key.origin,
                        action: "CREATE",
                        key_id: key.id,
                        fields: Self::CREATED_FIELDS,
                        changes: serde_json::Value::Array(Vec::new()),
                    };
                    Self::audit_row(&event, now)
                })
                .collect::<Result<Vec<_>>>()?;
            audit_event::Entity::insert_many(events).exec(&txn).await.map_err(db_error)?;
        }
        txn.commit().await.map_err(db_error)
    }

    /// The permission rows of key `key_id`.
    fn permission_rows(
        key_id: KeyId,
        permissions: &[String],
    ) -> impl Iterator<Item = api_key_permission::ActiveModel> + '_ {
        permissions
            .iter()
            .map(move |p| api_key_permission::ActiveModel { key_id: Set(key_id.0), permission: Set(p.clone()) })
    }

    async fn insert_permissions(txn: &impl ConnectionTrait, key_id: KeyId, permissions: &[String]) -> Result<()> {
        if permissions.is_empty() {
            return Ok(());
        }
        api_key_permission::Entity::insert_many(Self::permission_rows(key_id, permissions))
            .exec(txn)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// The row of `event` at `time`.
    fn audit_row(event: &Event<'_>, time: chrono::DateTime<Utc>) -> Result<audit_event::ActiveModel> {
        Ok(audit_event::ActiveModel {
            id: Set(Uuid::new_v4()),
            org_id: Set(event.org_id.0),
            actor_type: Set(event.actor.kind.as_str().to_owned()),
            actor_id: Set(event.actor.id.clone()),
            actor_name: Set(event.actor.display_name.clone()),
            action: Set(event.action.to_owned()),
            key_id: Set(event.key_id.0),
            changed_fields: Set(serde_json::to_string(event.fields).map_err(Error::internal)?),
            time: Set(time),
            changes: Set(event.changes.to_string()),
            request_id: Set(event.origin.request_id.clone()),
            source_address: Set(event.origin.address.clone()),
        })
    }

    async fn audit(txn: &impl ConnectionTrait, event: &Event<'_>) -> Result<()> {
        audit_event::Entity::insert(Self::audit_row(event, Utc::now())?).exec(txn).await.map_err(db_error)?;
        Ok(())
    }

    async fn permissions_of(conn: &impl ConnectionTrait, key_ids: &[Uuid]) -> Result<Vec<api_key_permission::Model>> {
        if key_ids.is_empty() {
            return Ok(Vec::new());
        }
        api_key_permission::Entity::find()
            .filter(api_key_permission::Column::KeyId.is_in(key_ids.iter().copied()))
            .order_by_asc(api_key_permission::Column::Permission)
            .all(conn)
            .await
            .map_err(db_error)
    }

    /// A key of `org_id`.
    ///
    /// # Errors
    /// NOT_FOUND (also for keys of other orgs); UNAVAILABLE or INTERNAL.
    pub async fn get_key(&self, org_id: OrgId, id: KeyId) -> Result<ApiKey> {
        Self::load_key(&self.conn(), org_id, id).await
    }

    async fn load_key(conn: &impl ConnectionTrait, org_id: OrgId, id: KeyId) -> Result<ApiKey> {
        let model = api_key::Entity::find_by_id(id.0)
            .filter(api_key::Column::OrgId.eq(org_id.0))
            .one(conn)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::KeyNotFound(id.to_string()))?;
        let permissions = Self::permissions_of(conn, &[id.0]).await?.into_iter().map(|p| p.permission).collect();
        Ok(key_from_rows(model, permissions))
    }

    /// The secret hash of key `id`, in any org: one query, the same for known and unknown keys, so
    /// the time before verification does not depend on whether the key exists.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn find_secret_hash(&self, id: KeyId) -> Result<Option<StoredSecret>> {
        let found = api_key::Entity::find_by_id(id.0)
            .select_only()
            .columns([
                api_key::Column::SecretHash,
                api_key::Column::Locked,
                api_key::Column::Disabled,
                api_key::Column::ExpireTime,
                api_key::Column::FailedAttempts,
                api_key::Column::PreviousSecretHash,
                api_key::Column::PreviousSecretExpireTime,
                api_key::Column::DeleteTime,
            ])
            .into_tuple::<SecretRow>()
            .one(&self.conn())
            .await
            .map_err(db_error)?;
        let now = Utc::now();
        Ok(found.map(|(hash, locked, disabled, expire_time, failed_attempts, previous, previous_until, deleted)| {
            let flags = StateFlags { deleted: deleted.is_some(), disabled, locked, expire_time };
            StoredSecret {
                hash: SecretHash(hash),
                refused: KeyState::of(flags, now) != KeyState::Active,
                previous: previous.filter(|_| previous_until.is_some_and(|at| at > now)).map(SecretHash),
                failed_attempts,
            }
        }))
    }

    /// The policy of `org_id`.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn org_policy(&self, org_id: OrgId) -> Result<OrgPolicy> {
        let org = org::Entity::find_by_id(org_id.0)
            .one(&self.conn())
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::internal("caller's org not found"))?;
        let max_key_lifetime =
            u64::try_from(org.max_key_lifetime_secs).ok().filter(|secs| *secs > 0).map(std::time::Duration::from_secs);
        Ok(OrgPolicy { lockout_threshold: u32::try_from(org.lockout_threshold).unwrap_or(0), max_key_lifetime })
    }

    /// Replaces the policy of `org_id`.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn set_org_policy(&self, org_id: OrgId, policy: OrgPolicy) -> Result<OrgPolicy> {
        let threshold = i32::try_from(policy.lockout_threshold).map_err(Error::internal)?;
        let max_lifetime = policy.max_key_lifetime.map_or(0, |max| i64::try_from(max.as_secs()).unwrap_or(i64::MAX));
        org::Entity::update_many()
            .col_expr(org::Column::LockoutThreshold, Expr::value(threshold))
            .col_expr(org::Column::MaxKeyLifetimeSecs, Expr::value(max_lifetime))
            .filter(org::Column::Id.eq(org_id.0))
            .exec(&self.conn())
            .await
            .map_err(db_error)?;
        self.org_policy(org_id).await
    }

    /// Writes a batch of authentication outcomes in one transaction and locks the keys that crossed
    /// their org's threshold (a version bump and a `LOCK` audit event by the system actor `lockout`).
    /// Returns the keys locked by this batch.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL; nothing is written then.
    pub async fn record_outcomes(&self, batch: &[Outcomes]) -> Result<Vec<KeyId>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // Rows are locked in key order, so two replicas flushing overlapping batches cannot
        // deadlock each other.
        let mut batch: Vec<&Outcomes> = batch.iter().collect();
        batch.sort_unstable_by_key(|o| o.key_id.0);
        let txn = self.conn().begin().await.map_err(db_error)?;
        for outcome in &batch {
            let attempts = i64::try_from(outcome.failures).unwrap_or(i64::MAX);
            let mut update = api_key::Entity::update_many().filter(api_key::Column::Id.eq(outcome.key_id.0));
            update = if outcome.reset {
                update.col_expr(api_key::Column::FailedAttempts, Expr::value(attempts))
            } else {
                update.col_expr(
                    api_key::Column::FailedAttempts,
                    sea_orm::sea_query::ExprTrait::add(Expr::col(api_key::Column::FailedAttempts), attempts),
                )
            };
            if let Some(time) = outcome.last_failure {
                update = update.col_expr(api_key::Column::LastFailureTime, Expr::value(time));
            }
            update.exec(&txn).await.map_err(db_error)?;
        }
        let ids: Vec<Uuid> = batch.iter().map(|o| o.key_id.0).collect();
        let candidates: Vec<(Uuid, Uuid, i64, i64)> = api_key::Entity::find()
            .select_only()
            .columns([
                api_key::Column::Id,
                api_key::Column::OrgId,
                api_key::Column::FailedAttempts,
                api_key::Column::Version,
            ])
            .filter(api_key::Column::Id.is_in(ids))
            .filter(api_key::Column::Locked.eq(false))
            .into_tuple()
            .all(&txn)
            .await
            .map_err(db_error)?;
        let org_ids: Vec<Uuid> = candidates.iter().map(|(_, org_id, _, _)| *org_id).collect();
        let thresholds: std::collections::HashMap<Uuid, i32> = org::Entity::find()
            .select_only()
            .columns([org::Column::Id, org::Column::LockoutThreshold])
            .filter(org::Column::Id.is_in(org_ids))
            .into_tuple::<(Uuid, i32)>()
            .all(&txn)
            .await
            .map_err(db_error)?
            .into_iter()
            .collect();
        let mut locked = Vec::new();
        for (id, org_id, attempts, version) in candidates {
            let threshold = i64::from(thresholds.get(&org_id).copied().unwrap_or(0));
            if threshold == 0 || attempts < threshold {
                continue;
            }
            api_key::Entity::update_many()
                .col_expr(api_key::Column::Locked, Expr::value(true))
                .col_expr(api_key::Column::Version, Expr::value(version + 1))
                .filter(api_key::Column::Id.eq(id))
                .exec(&txn)
                .await
                .map_err(db_error)?;
            let actor = Actor::system("lockout");
            let event = Event {
                org_id: OrgId(org_id),
                actor: &actor,
                origin: &Origin::default(),
                action: "LOCK",
                key_id: KeyId(id),
                fields: &["state"],
                changes: serde_json::json!([{ "field": "state", "old": "ACTIVE", "new": "LOCKED" }]),
            };
            Self::audit(&txn, &event).await?;
            locked.push((OrgId(org_id), KeyId(id)));
        }
        // Last, so the change log's lock is held for as short a time as possible.
        for (org_id, key_id) in &locked {
            Self::log_change(&txn, *org_id, *key_id).await?;
        }
        txn.commit().await.map_err(db_error)?;
        let locked = locked.into_iter().map(|(_, key_id)| key_id).collect();
        Ok(locked)
    }

    /// What Authenticate needs about key `id`, in any org, read after its secret matched `hash`: one
    /// query (the key, its org's default group and its permissions, joined), and `None` if the key
    /// is gone or `hash` is neither its current hash nor its previous one in its grace period.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn find_auth_record(&self, id: KeyId, hash: &SecretHash) -> Result<Option<AuthRecord>> {
        use sea_orm::{FromQueryResult as _, Iterable as _, sea_query::ExprTrait as _};
        let query = Query::select()
            .columns(api_key::Column::iter().map(|c| (api_key::Entity, c)))
            .column((org::Entity, org::Column::DefaultGroup))
            .column((api_key_permission::Entity, api_key_permission::Column::Permission))
            .from(api_key::Entity)
            .inner_join(
                org::Entity,
                Expr::col((org::Entity, org::Column::Id)).equals((api_key::Entity, api_key::Column::OrgId)),
            )
            .left_join(
                api_key_permission::Entity,
                Expr::col((api_key_permission::Entity, api_key_permission::Column::KeyId))
                    .equals((api_key::Entity, api_key::Column::Id)),
            )
            .and_where(Expr::col((api_key::Entity, api_key::Column::Id)).eq(id.0))
            .cond_where(
                sea_orm::Condition::any()
                    .add(Expr::col((api_key::Entity, api_key::Column::SecretHash)).eq(hash.0.as_str()))
                    .add(
                        sea_orm::Condition::all()
                            .add(Expr::col((api_key::Entity, api_key::Column::PreviousSecretHash)).eq(hash.0.as_str()))
                            .add(
                                Expr::col((api_key::Entity, api_key::Column::PreviousSecretExpireTime)).gt(Utc::now()),
                            ),
                    ),
            )
            .to_owned();
        let rows = self.conn().query_all(&query).await.map_err(db_error)?;
        let Some(first) = rows.first() else { return Ok(None) };
        let model = api_key::Model::from_query_result(first, "").map_err(db_error)?;
        let default_group: String = first.try_get("", "default_group").map_err(db_error)?;
        let mut permissions = Vec::with_capacity(rows.len());
        for row in &rows {
            if let Some(permission) = row.try_get::<Option<String>>("", "permission").map_err(db_error)? {
                permissions.push(permission);
            }
        }
        let secret_hash = SecretHash(model.secret_hash.clone());
        let previous_until = (secret_hash != *hash).then_some(model.previous_secret_expire_time).flatten();
        Ok(Some(AuthRecord { key: key_from_rows(model, permissions), secret_hash, default_group, previous_until }))
    }

    /// Replaces the secret hash of key `id` with `new` if it is still `old` (the same secret, hashed
    /// with other parameters): not a change of the key, so no version bump and no audit event.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn replace_secret_hash(&self, id: KeyId, old: &SecretHash, new: SecretHash) -> Result<()> {
        api_key::Entity::update_many()
            .col_expr(api_key::Column::SecretHash, Expr::value(new.0))
            .filter(api_key::Column::Id.eq(id.0))
            .filter(api_key::Column::SecretHash.eq(old.0.as_str()))
            .exec(&self.conn())
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// One page of keys of `org_id`, ordered by (name key, id).
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn list_keys(&self, org_id: OrgId, query: &ListQuery) -> Result<Vec<(ApiKey, String)>> {
        let mut select = api_key::Entity::find().filter(api_key::Column::OrgId.eq(org_id.0));
        if let Some(text) = &query.name_contains {
            let pattern = LikeExpr::new(format!("%{}%", like_escape(text))).escape('\\');
            select = select.filter(api_key::Column::DisplayNameKey.like(pattern));
        }
        if let Some(app) = &query.app_id {
            select = select.filter(api_key::Column::AppId.eq(app.as_str()));
        }
        if let Some(permission) = &query.permission {
            select = select.filter(
                api_key::Column::Id.in_subquery(
                    Query::select()
                        .column(api_key_permission::Column::KeyId)
                        .from(api_key_permission::Entity)
                        .and_where(api_key_permission::Column::Permission.eq(permission.as_str()))
                        .to_owned(),
                ),
            );
        }
        let deleted = api_key::Column::DeleteTime;
        if query.state == Some(KeyState::Deleted) {
            select = select.filter(deleted.is_not_null());
        } else if !query.show_deleted || query.state.is_some() {
            select = select.filter(deleted.is_null());
        }
        if let Some(state) = query.state {
            let now = Utc::now();
            let (disabled, locked) = (api_key::Column::Disabled, api_key::Column::Locked);
            let live = sea_orm::Condition::any()
                .add(api_key::Column::ExpireTime.is_null())
                .add(api_key::Column::ExpireTime.gt(now));
            select = match state {
                KeyState::Deleted => select,
                KeyState::Disabled => select.filter(disabled.eq(true)),
                KeyState::Locked => select.filter(disabled.eq(false)).filter(locked.eq(true)),
                KeyState::Expired => select
                    .filter(disabled.eq(false))
                    .filter(locked.eq(false))
                    .filter(api_key::Column::ExpireTime.lte(now)),
                KeyState::Active => select.filter(disabled.eq(false)).filter(locked.eq(false)).filter(live),
            };
        }
        if let Some(before) = query.expiring_before {
            select = select.filter(api_key::Column::ExpireTime.lt(before));
        }
        // Deleted keys may share a name key, so the position is (name key, id): a row-value
        // comparison, one range on the (org, name key, id) index (an OR made deep pages scan).
        if let Some((name_key, id)) = &query.after {
            use sea_orm::sea_query::ExprTrait as _;
            let position = Expr::tuple([Expr::col(api_key::Column::DisplayNameKey), Expr::col(api_key::Column::Id)]);
            select = select.filter(position.gt(Expr::tuple([Expr::value(name_key.as_str()), Expr::value(*id)])));
        }
        let models = select
            .order_by_asc(api_key::Column::DisplayNameKey)
            .order_by_asc(api_key::Column::Id)
            .limit(query.limit)
            .all(&self.conn())
            .await
            .map_err(db_error)?;
        let ids: Vec<Uuid> = models.iter().map(|m| m.id).collect();
        let mut by_key: std::collections::HashMap<Uuid, Vec<String>> = std::collections::HashMap::new();
        for p in Self::permissions_of(&self.conn(), &ids).await? {
            by_key.entry(p.key_id).or_default().push(p.permission);
        }
        Ok(models
            .into_iter()
            .map(|m| {
                let name_key = m.display_name_key.clone();
                let permissions = by_key.remove(&m.id).unwrap_or_default();
                (key_from_rows(m, permissions), name_key)
            })
            .collect())
    }

    /// An UPDATE of `current` that records `actor` as updater and bumps the version.
    fn versioned_update(current: &ApiKey, actor: &Actor) -> sea_orm::UpdateMany<api_key::Entity> {
        api_key::Entity::update_many()
            .col_expr(api_key::Column::UpdatedByType, Expr::value(actor.kind.as_str()))
            .col_expr(api_key::Column::UpdatedById, Expr::value(actor.id.as_str()))
            .col_expr(api_key::Column::UpdatedByName, Expr::value(actor.display_name.as_str()))
            .col_expr(api_key::Column::UpdateTime, Expr::value(Utc::now()))
            .col_expr(api_key::Column::Version, Expr::value(current.version + 1))
            .filter(api_key::Column::Id.eq(current.id.0))
            .filter(api_key::Column::OrgId.eq(current.org_id.0))
    }

    /// `update` also clearing the lockout: unlocked, no failed attempts.
    fn unlocked(update: sea_orm::UpdateMany<api_key::Entity>) -> sea_orm::UpdateMany<api_key::Entity> {
        update
            .col_expr(api_key::Column::Locked, Expr::value(false))
            .col_expr(api_key::Column::FailedAttempts, Expr::value(0))
    }

    async fn delete_permissions(txn: &impl ConnectionTrait, key_id: KeyId) -> Result<()> {
        api_key_permission::Entity::delete_many()
            .filter(api_key_permission::Column::KeyId.eq(key_id.0))
            .exec(txn)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Changes key `id` of `org_id` in one transaction: locks the key's row, reads it, lets `decide`
    /// turn the current key into a [`Change`] (or refuse), applies it with an audit event recorded as
    /// `actor`, and commits. Returns the key as it is after the change.
    ///
    /// The row lock comes first, so concurrent mutations of one key queue (a row lock on PostgreSQL,
    /// the database write lock on SQLite) and each one decides on the latest committed state: a
    /// request without an etag never fails because another one got there first, and one with an etag
    /// is ABORTED exactly when the key moved past it.
    ///
    /// # Errors
    /// NOT_FOUND (also for keys of other orgs), what `decide` returns, ALREADY_EXISTS (display name
    /// taken), UNAVAILABLE, INTERNAL. Nothing is written on error.
    pub async fn mutate(
        &self,
        org_id: OrgId,
        id: KeyId,
        (actor, origin): (&Actor, &Origin),
        decide: impl FnOnce(&ApiKey) -> Result<Change>,
    ) -> Result<ApiKey> {
        let txn = self.conn().begin().await.map_err(db_error)?;
        let locked = api_key::Entity::update_many()
            .col_expr(api_key::Column::Version, Expr::col(api_key::Column::Version))
            .filter(api_key::Column::Id.eq(id.0))
            .filter(api_key::Column::OrgId.eq(org_id.0))
            .exec(&txn)
            .await
            .map_err(db_error)?
            .rows_affected;
        if locked == 0 {
            return Err(Error::KeyNotFound(id.to_string()));
        }
        let current = Self::load_key(&txn, org_id, id).await?;
        let (action, fields) = match decide(&current)? {
            Change::Update(changes) => {
                let mut update = Self::versioned_update(&current, actor);
                if let Some(DisplayName { shown, key }) = &changes.display_name {
                    update = update
                        .col_expr(api_key::Column::DisplayName, Expr::value(shown.as_str()))
                        .col_expr(api_key::Column::DisplayNameKey, Expr::value(key.as_str()));
                }
                if let Some(description) = &changes.description {
                    update = update.col_expr(api_key::Column::Description, Expr::value(description.as_str()));
                }
                if let Some(expire_time) = changes.expire_time {
                    // A new expire time gets its own warnings.
                    update = update
                        .col_expr(api_key::Column::ExpireTime, Expr::value(expire_time))
                        .col_expr(api_key::Column::ExpiryWarned, Expr::value(0));
                }
                if let Some(networks) = &changes.allowed_cidrs {
                    update = update.col_expr(api_key::Column::AllowedCidrs, Expr::value(networks.join(" ")));
                }
                if let Some(limit) = changes.rate_limit {
                    let (requests, window_ms) = limit.map(limit_columns).unzip();
                    update = update
                        .col_expr(api_key::Column::RateLimitRequests, Expr::value(requests))
                        .col_expr(api_key::Column::RateLimitWindowMs, Expr::value(window_ms));
                }
                update.exec(&txn).await.map_err(|e| match (&changes.display_name, is_unique_violation(&e)) {
                    (Some(name), true) => Error::DisplayNameTaken(name.shown.clone()),
                    _ => db_error(e),
                })?;
                if let Some(permissions) = &changes.permissions {
                    Self::delete_permissions(&txn, id).await?;
                    Self::insert_permissions(&txn, id, permissions).await?;
                }
                ("UPDATE", changes.changed_fields())
            }
            Change::ReplaceSecret(SecretHash(secret_hash), keep_until) => {
                // The right-hand sides see the row as it was: the previous hash is the current one.
                let previous = match keep_until {
                    Some(_) => Expr::col(api_key::Column::SecretHash),
                    None => Expr::value(Option::<String>::None),
                };
                Self::unlocked(Self::versioned_update(&current, actor))
                    .col_expr(api_key::Column::PreviousSecretHash, previous)
                    .col_expr(api_key::Column::PreviousSecretExpireTime, Expr::value(keep_until))
                    .col_expr(api_key::Column::SecretHash, Expr::value(secret_hash))
                    .exec(&txn)
                    .await
                    .map_err(db_error)?;
                ("REGENERATE_SECRET", vec!["secret"])
            }
            Change::Unlock => {
                Self::unlocked(Self::versioned_update(&current, actor)).exec(&txn).await.map_err(db_error)?;
                ("UNLOCK", vec!["state"])
            }
            Change::SetDisabled(disabled) => {
                Self::versioned_update(&current, actor)
                    .col_expr(api_key::Column::Disabled, Expr::value(disabled))
                    .exec(&txn)
                    .await
                    .map_err(db_error)?;
                (if disabled { "DISABLE" } else { "ENABLE" }, vec!["state"])
            }
            Change::Delete(purge_time) => {
                Self::versioned_update(&current, actor)
                    .col_expr(api_key::Column::DeleteTime, Expr::value(Utc::now()))
                    .col_expr(api_key::Column::PurgeTime, Expr::value(purge_time))
                    .exec(&txn)
                    .await
                    .map_err(db_error)?;
                ("DELETE", vec!["state"])
            }
            Change::Undelete => {
                let restored = Self::versioned_update(&current, actor)
                    .col_expr(api_key::Column::DeleteTime, Expr::value(Option::<chrono::DateTime<Utc>>::None))
                    .col_expr(api_key::Column::PurgeTime, Expr::value(Option::<chrono::DateTime<Utc>>::None))
                    .exec(&txn)
                    .await;
                if let Err(error) = restored {
                    if !is_unique_violation(&error) {
                        return Err(db_error(error));
                    }
                    // Which live key took the name (the transaction is aborted on PostgreSQL: ask
                    // outside it).
                    drop(txn);
                    return Err(self.name_holder(org_id, &current).await);
                }
                ("UNDELETE", vec!["state"])
            }
        };
        let after = Self::load_key(&txn, org_id, id).await?;
        let event = Event {
            org_id,
            actor,
            origin,
            action,
            key_id: id,
            fields: &fields,
            changes: changes(Some(&current), Some(&after), Utc::now()),
        };
        Self::audit(&txn, &event).await?;
        Self::log_change(&txn, org_id, id).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(after)
    }

    /// The error for restoring `deleted`, whose display name a live key holds: ALREADY_EXISTS
    /// naming the holder.
    async fn name_holder(&self, org_id: OrgId, deleted: &ApiKey) -> Error {
        // The live key with the deleted one's stored name key (the one the unique index compares).
        let name_key = Query::select()
            .column(api_key::Column::DisplayNameKey)
            .from(api_key::Entity)
            .and_where(api_key::Column::Id.eq(deleted.id.0))
            .to_owned();
        let holder = api_key::Entity::find()
            .select_only()
            .column(api_key::Column::Id)
            .filter(api_key::Column::OrgId.eq(org_id.0))
            .filter(api_key::Column::DisplayNameKey.in_subquery(name_key))
            .filter(api_key::Column::DeleteTime.is_null())
            .into_tuple::<Uuid>()
            .one(&self.conn())
            .await
            .map_err(db_error);
        match holder {
            Ok(Some(holder)) => {
                Error::DisplayNameHeld { name: deleted.display_name.clone(), holder_id: holder.to_string() }
            }
            // Renamed or deleted since: the name is taken, by whom is no longer known.
            Ok(None) => Error::DisplayNameTaken(deleted.display_name.clone()),
            Err(error) => error,
        }
    }

    /// Removes for good up to `limit` deleted keys whose purge time has come (their permissions
    /// too; their audit events stay), each with a `PURGE` event by `actor`, in one transaction.
    /// Replicas may purge concurrently: a key is purged, and audited, once. Returns the purged keys.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL; nothing is removed on error.
    pub async fn purge_deleted(&self, now: chrono::DateTime<Utc>, limit: u64, actor: &Actor) -> Result<Vec<KeyId>> {
        let due: Vec<(Uuid, Uuid)> = api_key::Entity::find()
            .select_only()
            .columns([api_key::Column::Id, api_key::Column::OrgId])
            .filter(api_key::Column::PurgeTime.lte(now))
            .limit(limit)
            .into_tuple()
            .all(&self.conn())
            .await
            .map_err(db_error)?;
        if due.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.conn().begin().await.map_err(db_error)?;
        let mut purged = Vec::with_capacity(due.len());
        for (id, org_id) in due {
            let removed = api_key::Entity::delete_many()
                .filter(api_key::Column::Id.eq(id))
                .filter(api_key::Column::PurgeTime.lte(now))
                .exec(&txn)
                .await
                .map_err(db_error)?
                .rows_affected;
            // Another replica got there first.
            if removed == 0 {
                continue;
            }
            permission_usage::Entity::delete_many()
                .filter(permission_usage::Column::KeyId.eq(id))
                .exec(&txn)
                .await
                .map_err(db_error)?;
            // The foreign key cascades too; deleting explicitly keeps a database without
            // enforced foreign keys clean.
            Self::delete_permissions(&txn, KeyId(id)).await?;
            let event = Event {
                org_id: OrgId(org_id),
                actor,
                origin: &Origin::default(),
                action: "PURGE",
                key_id: KeyId(id),
                fields: &[],
                changes: serde_json::Value::Array(Vec::new()),
            };
            Self::audit(&txn, &event).await?;
            purged.push(KeyId(id));
        }
        txn.commit().await.map_err(db_error)?;
        Ok(purged)
    }

    /// Appends a change of `key_id` to the change log, as the last write of a transaction: on
    /// PostgreSQL under [`CHANGE_LOG_LOCK`], and announced on [`CHANGE_CHANNEL`] (delivered at
    /// commit, so a rolled-back change announces nothing).
    async fn log_change(txn: &impl ConnectionTrait, org_id: OrgId, key_id: KeyId) -> Result<()> {
        let postgres = txn.get_database_backend() == DatabaseBackend::Postgres;
        if postgres {
            let lock = Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT pg_advisory_xact_lock($1)",
                [CHANGE_LOG_LOCK.into()],
            );
            txn.execute_raw(lock).await.map_err(db_error)?;
        }
        let row = key_change::ActiveModel {
            key_id: Set(key_id.0),
            org_id: Set(org_id.0),
            time: Set(Utc::now()),
            ..Default::default()
        };
        key_change::Entity::insert(row).exec(txn).await.map_err(db_error)?;
        if postgres {
            let notify = Statement::from_sql_and_values(
                DatabaseBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [CHANGE_CHANNEL.into(), key_id.to_string().into()],
            );
            txn.execute_raw(notify).await.map_err(db_error)?;
        }
        Ok(())
    }

    /// Where the change log stands.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn change_log(&self) -> Result<LogState> {
        let log = change_log::Entity::find_by_id(1)
            .one(&self.conn())
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::internal("change_log row missing"))?;
        let head: Option<i64> = key_change::Entity::find()
            .select_only()
            .column_as(key_change::Column::Seq.max(), "head")
            .into_tuple()
            .one(&self.conn())
            .await
            .map_err(db_error)?
            .flatten();
        Ok(LogState {
            instance: log.instance,
            head: head.unwrap_or(log.pruned_through).max(log.pruned_through),
            pruned_through: log.pruned_through,
        })
    }

    /// Up to `limit` changes after position `after`, in order.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn changes_after(&self, after: i64, limit: u64) -> Result<Vec<KeyChange>> {
        let rows = key_change::Entity::find()
            .filter(key_change::Column::Seq.gt(after))
            .order_by_asc(key_change::Column::Seq)
            .limit(limit)
            .all(&self.conn())
            .await
            .map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|r| KeyChange { seq: r.seq, key_id: r.key_id.into(), org_id: r.org_id.into() })
            .collect())
    }

    /// Deletes the changes older than `before` and moves the log's horizon past them. Returns how
    /// many were deleted.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL; nothing is deleted then.
    pub async fn prune_changes(&self, before: chrono::DateTime<Utc>) -> Result<u64> {
        let txn = self.conn().begin().await.map_err(db_error)?;
        let through: Option<i64> = key_change::Entity::find()
            .select_only()
            .column_as(key_change::Column::Seq.max(), "through")
            .filter(key_change::Column::Time.lt(before))
            .into_tuple()
            .one(&txn)
            .await
            .map_err(db_error)?
            .flatten();
        let Some(through) = through else { return Ok(0) };
        let deleted = key_change::Entity::delete_many()
            .filter(key_change::Column::Seq.lte(through))
            .exec(&txn)
            .await
            .map_err(db_error)?
            .rows_affected;
        change_log::Entity::update_many()
            .col_expr(change_log::Column::PrunedThrough, Expr::value(through))
            .filter(change_log::Column::Id.eq(1))
            .filter(change_log::Column::PrunedThrough.lt(through))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        txn.commit().await.map_err(db_error)?;
        Ok(deleted)
    }

    /// One page of the audit events of `org_id`, newest first (by time, then ID).
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn list_audit_events(&self, org_id: OrgId, query: &AuditQuery) -> Result<Vec<audit_event::Model>> {
        use audit_event::Column;
        let mut select = audit_event::Entity::find().filter(Column::OrgId.eq(org_id.0));
        if let Some(key_id) = query.key_id {
            select = select.filter(Column::KeyId.eq(key_id.0));
        }
        if let Some(actor_id) = &query.actor_id {
            select = select.filter(Column::ActorId.eq(actor_id.as_str()));
        }
        if let Some(action) = &query.action {
            select = select.filter(Column::Action.eq(action.as_str()));
        }
        if let Some(start) = query.start {
            select = select.filter(Column::Time.gte(start));
        }
        if let Some(end) = query.end {
            select = select.filter(Column::Time.lt(end));
        }
        if let Some((time, id)) = query.before {
            select = select.filter(
                sea_orm::Condition::any()
                    .add(Column::Time.lt(time))
                    .add(sea_orm::Condition::all().add(Column::Time.eq(time)).add(Column::Id.lt(id))),
            );
        }
        select
            .order_by_desc(Column::Time)
            .order_by_desc(Column::Id)
            .limit(query.limit)
            .all(&self.conn())
            .await
            .map_err(db_error)
    }

    /// Up to `limit` audit events of `org_id` after position (time, ID), oldest first.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn audit_events_since(
        &self,
        org_id: OrgId,
        (time, id): (chrono::DateTime<Utc>, Uuid),
        limit: u64,
    ) -> Result<Vec<audit_event::Model>> {
        use audit_event::Column;
        use sea_orm::sea_query::ExprTrait as _;
        let position = Expr::tuple([Expr::col(Column::Time), Expr::col(Column::Id)]);
        audit_event::Entity::find()
            .filter(Column::OrgId.eq(org_id.0))
            .filter(position.gt(Expr::tuple([Expr::value(time), Expr::value(id)])))
            .order_by_asc(Column::Time)
            .order_by_asc(Column::Id)
            .limit(limit)
            .all(&self.conn())
            .await
            .map_err(db_error)
    }

    /// Records an expiry warning for each live key of any org whose expire time lies after `after`
    /// and no later than `before`, and that has not had warning `level` (1: the first, 2: the last)
    /// or a later one: marks the key and writes one audit event (`action`, by `actor`, naming the
    /// expire time) in a transaction per key, so with several replicas each warning is written
    /// once. Returns the keys warned.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn warn_expiring(
        &self,
        after: chrono::DateTime<Utc>,
        before: chrono::DateTime<Utc>,
        level: i16,
        action: &str,
        actor: &Actor,
    ) -> Result<Vec<KeyId>> {
        use api_key::Column;
        let due: Vec<(Uuid, Uuid, chrono::DateTime<Utc>)> = api_key::Entity::find()
            .select_only()
            .columns([Column::Id, Column::OrgId, Column::ExpireTime])
            .filter(Column::DeleteTime.is_null())
            .filter(Column::ExpireTime.gt(after))
            .filter(Column::ExpireTime.lte(before))
            .filter(Column::ExpiryWarned.lt(level))
            .limit(500)
            .into_tuple()
            .all(&self.conn())
            .await
            .map_err(db_error)?;
        let mut warned = Vec::new();
        for (id, org_id, expire_time) in due {
            let txn = self.conn().begin().await.map_err(db_error)?;
            let marked = api_key::Entity::update_many()
                .col_expr(Column::ExpiryWarned, Expr::value(level))
                .filter(Column::Id.eq(id))
                .filter(Column::ExpiryWarned.lt(level))
                .filter(Column::ExpireTime.eq(expire_time))
                .exec(&txn)
                .await
                .map_err(db_error)?
                .rows_affected;
            if marked == 0 {
                continue;
            }
            let at = expire_time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let event = Event {
                org_id: OrgId(org_id),
                actor,
                origin: &Origin::default(),
                action,
                key_id: KeyId(id),
                fields: &[],
                changes: serde_json::json!([{ "field": "expire_time", "old": at, "new": at }]),
            };
            Self::audit(&txn, &event).await?;
            txn.commit().await.map_err(db_error)?;
            warned.push(KeyId(id));
        }
        Ok(warned)
    }

    /// Writes when, from where and by what keys were last used: one UPDATE per 500 keys, each
    /// key's columns changed only if the time is newer than the stored one (replicas report in any
    /// order). Not a change of the key: no version bump, no audit event. Returns the statements run.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn record_usage(&self, batch: &[(Uuid, crate::usage::Seen)]) -> Result<u64> {
        use api_key::Column;
        use sea_orm::sea_query::{CaseStatement, ExprTrait as _};
        let mut statements = 0;
        for chunk in batch.chunks(500) {
            let (mut time, mut address, mut agent) = (CaseStatement::new(), CaseStatement::new(), CaseStatement::new());
            for (id, seen) in chunk {
                let seen_time = DateTime::<Utc>::from(seen.time);
                let newer = Expr::col(Column::Id)
                    .eq(*id)
                    .and(Expr::col(Column::LastUsedTime).is_null().or(Expr::col(Column::LastUsedTime).lt(seen_time)));
                let shown = seen.address.map(|a| a.to_string()).unwrap_or_default();
                time = time.case(newer.clone(), Expr::value(seen_time));
                address = address.case(newer.clone(), Expr::value(shown));
                agent = agent.case(newer, Expr::value(seen.agent.clone()));
            }
            api_key::Entity::update_many()
                .col_expr(Column::LastUsedTime, time.finally(Expr::col(Column::LastUsedTime)).into())
                .col_expr(Column::LastUsedAddress, address.finally(Expr::col(Column::LastUsedAddress)).into())
                .col_expr(Column::LastUsedAgent, agent.finally(Expr::col(Column::LastUsedAgent)).into())
                .filter(Column::Id.is_in(chunk.iter().map(|(id, _)| *id)))
                .exec(&self.conn())
                .await
                .map_err(db_error)?;
            statements += 1;
        }
        let exercised: Vec<permission_usage::ActiveModel> = batch
            .iter()
            .flat_map(|(id, seen)| {
                seen.exercised.iter().map(|(permission, time)| permission_usage::ActiveModel {
                    key_id: Set(*id),
                    permission: Set(permission.clone()),
                    last_exercised_time: Set(DateTime::<Utc>::from(*time)),
                })
            })
            .collect();
        for chunk in exercised.chunks(500) {
            use permission_usage::Column;
            // The newest time wins, whichever replica reports last.
            let newer = Expr::cust(
                "CASE WHEN excluded.last_exercised_time > permission_usage.last_exercised_time \
                 THEN excluded.last_exercised_time ELSE permission_usage.last_exercised_time END",
            );
            let upsert = sea_orm::sea_query::OnConflict::columns([Column::KeyId, Column::Permission])
                .value(Column::LastExercisedTime, newer)
                .to_owned();
            permission_usage::Entity::insert_many(chunk.to_vec())
                .on_conflict(upsert)
                .exec(&self.conn())
                .await
                .map_err(db_error)?;
            statements += 1;
        }
        Ok(statements)
    }

    /// Which of `ids` are keys of org `org` (deleted ones included) holding none of `excluded`.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn keys_of_org(
        &self,
        org: OrgId,
        ids: &[Uuid],
        excluded: &[&str],
    ) -> Result<std::collections::HashSet<Uuid>> {
        let mut own = std::collections::HashSet::new();
        let holding = Query::select()
            .column(api_key_permission::Column::KeyId)
            .from(api_key_permission::Entity)
            .and_where(api_key_permission::Column::Permission.is_in(excluded.iter().copied()))
            .to_owned();
        for chunk in ids.chunks(500) {
            let found: Vec<Uuid> = api_key::Entity::find()
                .select_only()
                .column(api_key::Column::Id)
                .filter(api_key::Column::OrgId.eq(org.0))
                .filter(api_key::Column::Id.is_in(chunk.iter().copied()))
                .filter(api_key::Column::Id.not_in_subquery(holding.clone()))
                .into_tuple()
                .all(&self.conn())
                .await
                .map_err(db_error)?;
            own.extend(found);
        }
        Ok(own)
    }

    /// When each permission of key `id` was last required of it (any org: the caller checked the
    /// key's org), at or after `since`.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn exercised_permissions(
        &self,
        id: KeyId,
        since: chrono::DateTime<Utc>,
    ) -> Result<Vec<(String, chrono::DateTime<Utc>)>> {
        use permission_usage::Column;
        permission_usage::Entity::find()
            .select_only()
            .columns([Column::Permission, Column::LastExercisedTime])
            .filter(Column::KeyId.eq(id.0))
            .filter(Column::LastExercisedTime.gte(since))
            .order_by_asc(Column::Permission)
            .into_tuple()
            .all(&self.conn())
            .await
            .map_err(db_error)
    }

    /// Removes audit events older than `before`, at most `limit` of them; returns how many.
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn prune_audit_events(&self, before: chrono::DateTime<Utc>, limit: u64) -> Result<u64> {
        use audit_event::Column;
        let old: Vec<Uuid> = audit_event::Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(Column::Time.lt(before))
            .limit(limit)
            .into_tuple()
            .all(&self.conn())
            .await
            .map_err(db_error)?;
        if old.is_empty() {
            return Ok(0);
        }
        let removed = audit_event::Entity::delete_many()
            .filter(Column::Id.is_in(old))
            .exec(&self.conn())
            .await
            .map_err(db_error)?;
        Ok(removed.rows_affected)
    }

    /// The audit events of a key, oldest first (for tests and tooling).
    ///
    /// # Errors
    /// UNAVAILABLE or INTERNAL.
    pub async fn audit_events(&self, key_id: impl Into<KeyId>) -> Result<Vec<audit_event::Model>> {
        audit_event::Entity::find()
            .filter(audit_event::Column::KeyId.eq(key_id.into().0))
            .order_by_asc(audit_event::Column::Time)
            .all(&self.conn())
            .await
            .map_err(db_error)
    }
}
