//! Per-key restrictions: `allowed_cidrs` (the networks a key may be used from, canonical CIDR text
//! separated by spaces; empty: any) and a rate limit (`rate_limit_requests` per
//! `rate_limit_window_ms`; both `NULL`: none). Existing keys get neither.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    AllowedCidrs,
    RateLimitRequests,
    RateLimitWindowMs,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        let columns = [
            ColumnDef::new(ApiKeys::AllowedCidrs).text().not_null().default("").to_owned(),
            ColumnDef::new(ApiKeys::RateLimitRequests).big_integer().null().to_owned(),
            ColumnDef::new(ApiKeys::RateLimitWindowMs).big_integer().null().to_owned(),
        ];
        for mut column in columns {
            manager.alter_table(Table::alter().table(ApiKeys::Table).add_column(&mut column).to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [ApiKeys::AllowedCidrs, ApiKeys::RateLimitRequests, ApiKeys::RateLimitWindowMs] {
            manager.alter_table(Table::alter().table(ApiKeys::Table).drop_column(column).to_owned()).await?;
        }
        Ok(())
    }
}
