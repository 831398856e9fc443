//! When, from where and by what each key was last used: `last_used_time`, `last_used_address` and
//! `last_used_agent`, written in batches by the usage flusher (never one write per request).
//! Existing keys have never been seen used.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    LastUsedTime,
    LastUsedAddress,
    LastUsedAgent,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        let columns = [
            ColumnDef::new(ApiKeys::LastUsedTime).timestamp_with_time_zone().null().to_owned(),
            ColumnDef::new(ApiKeys::LastUsedAddress).text().not_null().default("").to_owned(),
            ColumnDef::new(ApiKeys::LastUsedAgent).text().not_null().default("").to_owned(),
        ];
        for mut column in columns {
            manager.alter_table(Table::alter().table(ApiKeys::Table).add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [ApiKeys::LastUsedTime, ApiKeys::LastUsedAddress, ApiKeys::LastUsedAgent] {
            manager.alter_table(Table::alter().table(ApiKeys::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
