//! An index for reading an organization's audit trail newest first (ListAuditEvents).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    OrgId,
    Time,
    Id,
}

const NAME: &str = "ix_audit_events_org_time";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let index = Index::create()
            .name(NAME)
            .table(AuditEvents::Table)
            .col(AuditEvents::OrgId)
            .col(AuditEvents::Time)
            .col(AuditEvents::Id)
            .to_owned();
        manager.create_index(index).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(NAME).table(AuditEvents::Table).to_owned()).await
    }
}
