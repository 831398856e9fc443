//! sea-orm entities: one module per table. Rows, not domain objects; `store` converts.

/// `orgs`: organizations. Keys live inside exactly one.
pub mod org {
    use sea_orm::entity::prelude::*;

    /// One organization.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "orgs")]
    pub struct Model {
        /// Server-generated UUID.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// Unique name, e.g. `default`.
        #[sea_orm(unique)]
        pub name: String,
        /// The group that owns incidents created without an owner by the org's API keys.
        pub default_group: String,
        /// When the org was created.
        pub create_time: DateTimeUtc,
        /// Consecutive failed authentications after which a key locks; 0: never.
        pub lockout_threshold: i32,
        /// Longest lifetime of a key, in seconds; 0: no maximum.
        pub max_key_lifetime_secs: i64,
    }

    /// No navigable relations are needed.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `api_keys`: API key accounts.
pub mod api_key {
    use sea_orm::entity::prelude::*;

    /// One API key account. `secret_hash` is an argon2id PHC string and never leaves the store layer.
    #[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_keys")]
    pub struct Model {
        /// Server-generated UUID; never changes.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// Owning organization.
        pub org_id: Uuid,
        /// As entered, trimmed.
        pub display_name: String,
        /// Lower-cased display name: the uniqueness and ordering key.
        pub display_name_key: String,
        /// Free text.
        pub description: String,
        /// argon2id PHC string of the secret.
        pub secret_hash: String,
        /// Owning app, if app-managed.
        pub app_id: Option<String>,
        /// Creator: actor type (`API_KEY`, `USER`, `SYSTEM`).
        pub created_by_type: String,
        /// Creator ID.
        pub created_by_id: String,
        /// Creator display name.
        pub created_by_name: String,
        /// Last updater: actor type.
        pub updated_by_type: String,
        /// Last updater ID.
        pub updated_by_id: String,
        /// Last updater display name.
        pub updated_by_name: String,
        /// Creation time.
        pub create_time: DateTimeUtc,
        /// Last change time.
        pub update_time: DateTimeUtc,
        /// Incremented on every change; the etag.
        pub version: i64,
        /// Failed authentications since the last success, unlock or regeneration.
        pub failed_attempts: i64,
        /// When the last failed authentication happened.
        pub last_failure_time: Option<DateTimeUtc>,
        /// Locked by too many failures: refuses even its right secret.
        pub locked: bool,
        /// When the key stops authenticating; `None`: never.
        pub expire_time: Option<DateTimeUtc>,
        /// Disabled by an admin: refused until enabled again, with the same secret.
        pub disabled: bool,
        /// argon2id PHC string of the previous secret, during a rotation's grace period.
        pub previous_secret_hash: Option<String>,
        /// Until when the previous secret still authenticates.
        pub previous_secret_expire_time: Option<DateTimeUtc>,
        /// When the key was deleted; `None` while it is not.
        pub delete_time: Option<DateTimeUtc>,
        /// When a deleted key is removed for good.
        pub purge_time: Option<DateTimeUtc>,
        /// The networks the key may be used from: canonical CIDR text, space-separated; empty: any.
        pub allowed_cidrs: String,
        /// Rate limit: requests per window (with `rate_limit_window_ms`); `None`: no limit.
        pub rate_limit_requests: Option<i64>,
        /// Rate limit window in milliseconds.
        pub rate_limit_window_ms: Option<i64>,
        /// When the key was last used (written in batches); `None`: never seen.
        pub last_used_time: Option<DateTimeUtc>,
        /// The client address of that use; empty if unknown.
        pub last_used_address: String,
        /// The user agent of that use; empty if none.
        pub last_used_agent: String,
        /// Expiry warnings sent for the current expire time: 0 none, 1 the first, 2 the last.
        pub expiry_warned: i16,
    }

    impl std::fmt::Debug for Model {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("api_key::Model")
                .field("id", &self.id)
                .field("org_id", &self.org_id)
                .field("display_name", &self.display_name)
                .field("secret_hash", &"<redacted>")
                .field("version", &self.version)
                .finish_non_exhaustive()
        }
    }

    /// No navigable relations are needed.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `api_key_permissions`: the permissions each key holds, one row per (key, permission).
pub mod api_key_permission {
    use sea_orm::entity::prelude::*;

    /// One granted permission.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_key_permissions")]
    pub struct Model {
        /// The key (deleted with it).
        #[sea_orm(primary_key, auto_increment = false)]
        pub key_id: Uuid,
        /// The permission name.
        #[sea_orm(primary_key, auto_increment = false)]
        pub permission: String,
    }

    /// No navigable relations are needed.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `audit_events`: one row per mutation, written in the same transaction as the change.
pub mod audit_event {
    use sea_orm::entity::prelude::*;

    /// One audit event. Never holds a secret or a hash.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        /// Server-generated UUID.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// Organization of the key.
        pub org_id: Uuid,
        /// Actor type.
        pub actor_type: String,
        /// Actor ID.
        pub actor_id: String,
        /// Actor display name.
        pub actor_name: String,
        /// `CREATE`, `UPDATE`, `REGENERATE_SECRET`, `DELETE`, `BOOTSTRAP`.
        pub action: String,
        /// The key acted on.
        pub key_id: Uuid,
        /// JSON array of the changed field names.
        pub changed_fields: String,
        /// When it happened.
        pub time: DateTimeUtc,
        /// JSON list of `{"field", "old", "new"}`: the values before and after (never a secret).
        pub changes: String,
        /// The request that made the change (the caller's `x-request-id`, else generated).
        pub request_id: String,
        /// The client address the change came from; empty if unknown or made by the system.
        pub source_address: String,
    }

    /// No navigable relations are needed.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `key_changes`: the change log revocation runs on, one row per change of a key, written in the
/// same transaction as the change.
pub mod key_change {
    use sea_orm::entity::prelude::*;

    /// One change of a key.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "key_changes")]
    pub struct Model {
        /// Position in the log; increases with every change and is never reused.
        #[sea_orm(primary_key)]
        pub seq: i64,
        /// The key that changed.
        pub key_id: Uuid,
        /// Its organization.
        pub org_id: Uuid,
        /// When the change happened.
        pub time: DateTimeUtc,
    }

    /// No navigable relations are needed.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `change_log`: one row (`id` 1) about the change log itself.
pub mod change_log {
    use sea_orm::entity::prelude::*;

    /// The change log's identity and horizon.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "change_log")]
    pub struct Model {
        /// Always 1.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        /// Random ID of this database's log: a cursor naming another one is from another database.
        pub instance: Uuid,
        /// Highest `seq` pruned: a cursor below it may have missed changes.
        pub pruned_through: i64,
    }

    /// No navigable relations are needed.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `permission_usage`: which permissions each key exercised, and when last.
pub mod permission_usage {
    use sea_orm::entity::prelude::*;

    /// One (key, permission) pair that was required of the key at least once.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "permission_usage")]
    pub struct Model {
        /// The key (its rows are removed when it is purged).
        #[sea_orm(primary_key, auto_increment = false)]
        pub key_id: Uuid,
        /// The permission.
        #[sea_orm(primary_key, auto_increment = false)]
        pub permission: String,
        /// When a request last required it of the key.
        pub last_exercised_time: DateTimeUtc,
    }

    /// No navigable relations are needed.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
