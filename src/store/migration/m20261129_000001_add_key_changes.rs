//! The change log that revocation runs on: `key_changes`, one row per change of a key, numbered by
//! an ever-increasing `seq` (never reused, also after pruning: `AUTOINCREMENT` on SQLite, a sequence
//! on PostgreSQL), and `change_log`, one row naming this database (`instance`, so a cursor from
//! another database is recognised) and the highest `seq` pruned so far.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum KeyChanges {
    Table,
    Seq,
    KeyId,
    OrgId,
    Time,
}

#[derive(DeriveIden)]
enum ChangeLog {
    Table,
    Id,
    Instance,
    PrunedThrough,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(KeyChanges::Table)
                    .col(ColumnDef::new(KeyChanges::Seq).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(KeyChanges::KeyId).uuid().not_null())
                    .col(ColumnDef::new(KeyChanges::OrgId).uuid().not_null())
                    .col(ColumnDef::new(KeyChanges::Time).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ChangeLog::Table)
                    .col(ColumnDef::new(ChangeLog::Id).integer().not_null().primary_key())
                    .col(ColumnDef::new(ChangeLog::Instance).uuid().not_null())
                    .col(ColumnDef::new(ChangeLog::PrunedThrough).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        let row = Query::insert()
            .into_table(ChangeLog::Table)
            .columns([ChangeLog::Id, ChangeLog::Instance, ChangeLog::PrunedThrough])
            .values_panic([1.into(), uuid::Uuid::new_v4().into(), 0i64.into()])
            .to_owned();
        manager.exec_stmt(row).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ChangeLog::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(KeyChanges::Table).to_owned()).await
    }
}
