//! Soft delete: each key's `delete_time` (when it was deleted; `NULL` while it lives) and
//! `purge_time` (when it is removed for good). Display names stay unique among live keys only, so a
//! deleted key frees its name: the unique index becomes partial (`WHERE delete_time IS NULL`), and
//! listing, which may now show deleted keys sharing a name, gets a (org, name key, id) index for its
//! keyset. Existing keys stay live.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    OrgId,
    DisplayNameKey,
    DeleteTime,
    PurgeTime,
}

/// The unique index of the first migration: names unique among all keys.
const OLD_UNIQUE: &str = "ux_api_keys_org_display_name_key";
/// Names unique among live keys.
const LIVE_UNIQUE: &str = "ux_api_keys_org_live_display_name_key";
/// The keyset order of ListApiKeys, deleted keys included.
const LIST_ORDER: &str = "ix_api_keys_org_display_name_key_id";
/// Finds the keys due for purging.
const PURGE: &str = "ix_api_keys_purge_time";

fn unique_among_all() -> IndexCreateStatement {
    Index::create()
        .name(OLD_UNIQUE)
        .table(ApiKeys::Table)
        .col(ApiKeys::OrgId)
        .col(ApiKeys::DisplayNameKey)
        .unique()
        .to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        for column in [ApiKeys::DeleteTime, ApiKeys::PurgeTime] {
            let mut column = ColumnDef::new(column).timestamp_with_time_zone().null().to_owned();
            manager.alter_table(Table::alter().table(ApiKeys::Table).add_column(&mut column).to_owned()).await?;
        }
        // The partial index first, so the rule is never off on PostgreSQL (each statement is
        // transactional there, and the migration runs in one transaction).
        manager
            .create_index(
                Index::create()
                    .name(LIVE_UNIQUE)
                    .table(ApiKeys::Table)
                    .col(ApiKeys::OrgId)
                    .col(ApiKeys::DisplayNameKey)
                    .unique()
                    .and_where(Expr::col(ApiKeys::DeleteTime).is_null())
                    .to_owned(),
            )
            .await?;
        manager.drop_index(Index::drop().name(OLD_UNIQUE).table(ApiKeys::Table).to_owned()).await?;
        manager
            .create_index(
                Index::create()
                    .name(LIST_ORDER)
                    .table(ApiKeys::Table)
                    .col(ApiKeys::OrgId)
                    .col(ApiKeys::DisplayNameKey)
                    .col(ApiKeys::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(PURGE)
                    .table(ApiKeys::Table)
                    .col(ApiKeys::PurgeTime)
                    .and_where(Expr::col(ApiKeys::PurgeTime).is_not_null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Deleted keys would break the old rule; they go first.
        manager
            .exec_stmt(
                Query::delete()
                    .from_table(ApiKeys::Table)
                    .and_where(Expr::col(ApiKeys::DeleteTime).is_not_null())
                    .to_owned(),
            )
            .await?;
        for name in [PURGE, LIST_ORDER, LIVE_UNIQUE] {
            manager.drop_index(Index::drop().name(name).table(ApiKeys::Table).to_owned()).await?;
        }
        manager.create_index(unique_among_all()).await?;
        for column in [ApiKeys::DeleteTime, ApiKeys::PurgeTime] {
            manager.alter_table(Table::alter().table(ApiKeys::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
