//! Which permissions each key has exercised, and when last: one row per (key, permission), written
//! in batches with the last-used flush. The least-privilege report (GetApiKeyUsage) compares it with
//! the key's grants. No foreign key: a report for a key purged meanwhile must not fail the batch;
//! the purge removes a key's rows.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PermissionUsage {
    Table,
    KeyId,
    Permission,
    LastExercisedTime,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PermissionUsage::Table)
                    .col(ColumnDef::new(PermissionUsage::KeyId).uuid().not_null())
                    .col(ColumnDef::new(PermissionUsage::Permission).text().not_null())
                    .col(ColumnDef::new(PermissionUsage::LastExercisedTime).timestamp_with_time_zone().not_null())
                    .primary_key(Index::create().col(PermissionUsage::KeyId).col(PermissionUsage::Permission))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(PermissionUsage::Table).to_owned()).await
    }
}
