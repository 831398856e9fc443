//! Richer audit events: `changes` (a JSON list of `{"field", "old", "new"}` with the values before
//! and after, never a secret or hash), `request_id` and `source_address` (the client address the
//! change came from). Events written before have no values, request or address.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Changes,
    RequestId,
    SourceAddress,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        let columns = [
            ColumnDef::new(AuditEvents::Changes).text().not_null().default("[]").to_owned(),
            ColumnDef::new(AuditEvents::RequestId).text().not_null().default("").to_owned(),
            ColumnDef::new(AuditEvents::SourceAddress).text().not_null().default("").to_owned(),
        ];
        for mut column in columns {
            manager.alter_table(Table::alter().table(AuditEvents::Table).add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [AuditEvents::Changes, AuditEvents::RequestId, AuditEvents::SourceAddress] {
            manager.alter_table(Table::alter().table(AuditEvents::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
