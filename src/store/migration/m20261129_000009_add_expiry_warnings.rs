//! Expiry warnings, sent once each: `expiry_warned` is 0 before any, 1 after the first warning
//! (the key entered its last days), 2 after the last one (its last day). Changing a key's expire
//! time sets it back to 0. Existing keys have had no warning.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    ExpiryWarned,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut column = ColumnDef::new(ApiKeys::ExpiryWarned).small_integer().not_null().default(0).to_owned();
        manager.alter_table(Table::alter().table(ApiKeys::Table).add_column(&mut column).to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(ApiKeys::Table).drop_column(ApiKeys::ExpiryWarned).to_owned()).await
    }
}
