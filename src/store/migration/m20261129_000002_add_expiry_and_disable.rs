//! Key expiry and enable/disable: each key's optional `expire_time` and its `disabled` flag, and each
//! organization's `max_key_lifetime_secs` (0: no maximum). Existing keys stay enabled and never
//! expire; existing organizations get no maximum.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Orgs {
    Table,
    MaxKeyLifetimeSecs,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    ExpireTime,
    Disabled,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        let columns = [
            (
                Orgs::Table.into_iden(),
                ColumnDef::new(Orgs::MaxKeyLifetimeSecs).big_integer().not_null().default(0).to_owned(),
            ),
            (
                ApiKeys::Table.into_iden(),
                ColumnDef::new(ApiKeys::ExpireTime).timestamp_with_time_zone().null().to_owned(),
            ),
            (
                ApiKeys::Table.into_iden(),
                ColumnDef::new(ApiKeys::Disabled).boolean().not_null().default(false).to_owned(),
            ),
        ];
        for (table, mut column) in columns {
            manager.alter_table(Table::alter().table(table).add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Orgs::Table).drop_column(Orgs::MaxKeyLifetimeSecs).to_owned()).await?;
        for column in [ApiKeys::ExpireTime, ApiKeys::Disabled] {
            manager.alter_table(Table::alter().table(ApiKeys::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
