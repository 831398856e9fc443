//! Creates orgs, api_keys, api_key_permissions and audit_events.

use sea_orm::DatabaseBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Orgs {
    Table,
    Id,
    Name,
    DefaultGroup,
    CreateTime,
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    OrgId,
    DisplayName,
    DisplayNameKey,
    Description,
    SecretHash,
    AppId,
    CreatedByType,
    CreatedById,
    CreatedByName,
    UpdatedByType,
    UpdatedById,
    UpdatedByName,
    CreateTime,
    UpdateTime,
    Version,
}

#[derive(DeriveIden)]
enum ApiKeyPermissions {
    Table,
    KeyId,
    Permission,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    OrgId,
    ActorType,
    ActorId,
    ActorName,
    Action,
    KeyId,
    ChangedFields,
    Time,
}

fn text(col: impl IntoIden) -> ColumnDef {
    ColumnDef::new(col).string().not_null().to_owned()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Byte-wise ordering of the name key on every backend, so pagination order is the same on
        // SQLite (binary by default) and PostgreSQL (locale collation by default).
        let binary_collation =
            if manager.get_database_backend() == DatabaseBackend::Postgres { "COLLATE \"C\"" } else { "" };

        manager
            .create_table(
                Table::create()
                    .table(Orgs::Table)
                    .col(ColumnDef::new(Orgs::Id).uuid().not_null().primary_key())
                    .col(text(Orgs::Name).unique_key().to_owned())
                    .col(text(Orgs::DefaultGroup))
                    .col(ColumnDef::new(Orgs::CreateTime).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(ColumnDef::new(ApiKeys::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(ApiKeys::OrgId).uuid().not_null())
                    .col(text(ApiKeys::DisplayName))
                    .col(text(ApiKeys::DisplayNameKey).extra(binary_collation).to_owned())
                    .col(text(ApiKeys::Description))
                    .col(text(ApiKeys::SecretHash))
                    .col(ColumnDef::new(ApiKeys::AppId).string().null())
                    .col(text(ApiKeys::CreatedByType))
                    .col(text(ApiKeys::CreatedById))
                    .col(text(ApiKeys::CreatedByName))
                    .col(text(ApiKeys::UpdatedByType))
                    .col(text(ApiKeys::UpdatedById))
                    .col(text(ApiKeys::UpdatedByName))
                    .col(ColumnDef::new(ApiKeys::CreateTime).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(ApiKeys::UpdateTime).timestamp_with_time_zone().not_null())
                    .col(ColumnDef::new(ApiKeys::Version).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .from(ApiKeys::Table, ApiKeys::OrgId)
                            .to(Orgs::Table, Orgs::Id)
                            .on_delete(ForeignKeyAction::Restrict),
                    )
                    .to_owned(),
            )
            .await?;
        // The rule "display names are unique per org, ignoring case" lives here, so two concurrent
        // creates cannot both win.
        manager
            .create_index(
                Index::create()
                    .name("ux_api_keys_org_display_name_key")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::OrgId)
                    .col(ApiKeys::DisplayNameKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_api_keys_org_app")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::OrgId)
                    .col(ApiKeys::AppId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiKeyPermissions::Table)
                    .col(ColumnDef::new(ApiKeyPermissions::KeyId).uuid().not_null())
                    .col(text(ApiKeyPermissions::Permission))
                    .primary_key(Index::create().col(ApiKeyPermissions::KeyId).col(ApiKeyPermissions::Permission))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ApiKeyPermissions::Table, ApiKeyPermissions::KeyId)
                            .to(ApiKeys::Table, ApiKeys::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_api_key_permissions_permission")
                    .table(ApiKeyPermissions::Table)
                    .col(ApiKeyPermissions::Permission)
                    .col(ApiKeyPermissions::KeyId)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(ColumnDef::new(AuditEvents::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(AuditEvents::OrgId).uuid().not_null())
                    .col(text(AuditEvents::ActorType))
                    .col(text(AuditEvents::ActorId))
                    .col(text(AuditEvents::ActorName))
                    .col(text(AuditEvents::Action))
                    .col(ColumnDef::new(AuditEvents::KeyId).uuid().not_null())
                    .col(text(AuditEvents::ChangedFields))
                    .col(ColumnDef::new(AuditEvents::Time).timestamp_with_time_zone().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_audit_events_org_key")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::OrgId)
                    .col(AuditEvents::KeyId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            AuditEvents::Table.into_iden(),
            ApiKeyPermissions::Table.into_iden(),
            ApiKeys::Table.into_iden(),
            Orgs::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}
