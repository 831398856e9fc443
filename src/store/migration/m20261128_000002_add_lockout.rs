//! Failed-attempt lockout: each organization's threshold (100 for existing and new organizations; 0
//! turns locking off), and each key's failure count, last failure and locked flag. Existing keys
//! start unlocked with no failures.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Orgs {
    Table,
    LockoutThreshold,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    FailedAttempts,
    LastFailureTime,
    Locked,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        let columns = [
            (
                Orgs::Table.into_iden(),
                ColumnDef::new(Orgs::LockoutThreshold).integer().not_null().default(100).to_owned(),
            ),
            (
                ApiKeys::Table.into_iden(),
                ColumnDef::new(ApiKeys::FailedAttempts).big_integer().not_null().default(0).to_owned(),
            ),
            (
                ApiKeys::Table.into_iden(),
                ColumnDef::new(ApiKeys::LastFailureTime).timestamp_with_time_zone().null().to_owned(),
            ),
            (
                ApiKeys::Table.into_iden(),
                ColumnDef::new(ApiKeys::Locked).boolean().not_null().default(false).to_owned(),
            ),
        ];
        for (table, mut column) in columns {
            manager.alter_table(Table::alter().table(table).add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Orgs::Table).drop_column(Orgs::LockoutThreshold).to_owned()).await?;
        for column in [ApiKeys::FailedAttempts, ApiKeys::LastFailureTime, ApiKeys::Locked] {
            manager.alter_table(Table::alter().table(ApiKeys::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
