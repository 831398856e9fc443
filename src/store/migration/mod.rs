//! Schema migrations, applied at start and by `apikeys migrate`. Named `mYYYYMMDD_NNNNNN_verb_noun`.

use sea_orm_migration::prelude::*;

mod m20261127_000001_create_tables;
mod m20261128_000001_normalize_display_names;
mod m20261128_000002_add_lockout;
mod m20261129_000001_add_key_changes;
mod m20261129_000002_add_expiry_and_disable;
mod m20261129_000003_add_previous_secret;
mod m20261129_000004_index_audit_events_by_time;
mod m20261129_000005_add_soft_delete;
mod m20261129_000006_add_network_and_rate_limits;
mod m20261129_000007_add_audit_details;
mod m20261129_000008_add_last_used;
mod m20261129_000009_add_expiry_warnings;
mod m20261129_000010_add_permission_usage;

/// The ordered list of migrations.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_create_tables::Migration),
            Box::new(m20261128_000001_normalize_display_names::Migration),
            Box::new(m20261128_000002_add_lockout::Migration),
            Box::new(m20261129_000001_add_key_changes::Migration),
            Box::new(m20261129_000002_add_expiry_and_disable::Migration),
            Box::new(m20261129_000003_add_previous_secret::Migration),
            Box::new(m20261129_000004_index_audit_events_by_time::Migration),
            Box::new(m20261129_000005_add_soft_delete::Migration),
            Box::new(m20261129_000006_add_network_and_rate_limits::Migration),
            Box::new(m20261129_000007_add_audit_details::Migration),
            Box::new(m20261129_000008_add_last_used::Migration),
            Box::new(m20261129_000009_add_expiry_warnings::Migration),
            Box::new(m20261129_000010_add_permission_usage::Migration),
        ]
    }
}
