//! Re-keys display names for Unicode-aware uniqueness: names become NFC and `display_name_key`
//! becomes [`name_key`] (canonical caseless matching) instead of plain lower-casing.
//!
//! Names that were distinct before but look the same now (`Café` in NFC and `CAFÉ` in NFD) would break
//! the unique index. The oldest key of such a group keeps its name; each newer one gets its key ID's
//! first eight characters appended (`Café (0b8e12ab)`), with an audit event by the system actor
//! `migration`, so no key is lost and every rename is on record.
//!
//! Names that already contain control or format characters keep them: they were accepted by the
//! previous version and refusing them now would leave the key unreadable; new ones are refused.

use std::collections::HashMap;

use chrono::Utc;
use sea_orm::{ConnectionTrait, FromQueryResult};
use sea_orm_migration::prelude::*;
use unicode_normalization::UnicodeNormalization as _;
use uuid::Uuid;

use crate::domain::{MAX_DISPLAY_NAME_CHARS, name_key};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    OrgId,
    DisplayName,
    DisplayNameKey,
    CreateTime,
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

#[derive(Debug, FromQueryResult)]
struct Row {
    id: Uuid,
    org_id: Uuid,
    display_name: String,
    display_name_key: String,
}

/// `name` with ` (<first 8 of id>)` appended, shortened so the result stays within the limit.
fn disambiguated(name: &str, id: Uuid) -> String {
    let suffix = format!(" ({})", &id.simple().to_string()[..8]);
    let keep = MAX_DISPLAY_NAME_CHARS.saturating_sub(suffix.chars().count());
    let stem: String = name.chars().take(keep).collect();
    format!("{}{suffix}", stem.trim_end())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let select = Query::select()
            .columns([ApiKeys::Id, ApiKeys::OrgId, ApiKeys::DisplayName, ApiKeys::DisplayNameKey])
            .from(ApiKeys::Table)
            .order_by(ApiKeys::CreateTime, Order::Asc)
            .order_by(ApiKeys::Id, Order::Asc)
            .to_owned();
        let rows = Row::find_by_statement(db.get_database_backend().build(&select)).all(db).await?;

        // Oldest first: the first key to claim a folded name keeps it.
        let mut taken: HashMap<(Uuid, String), Uuid> = HashMap::new();
        let mut changes = Vec::new();
        for row in &rows {
            let nfc: String = row.display_name.nfc().collect();
            let mut shown = nfc.trim().to_owned();
            let mut key = name_key(&shown);
            let mut renamed = false;
            if taken.contains_key(&(row.org_id, key.clone())) {
                shown = disambiguated(&shown, row.id);
                key = name_key(&shown);
                renamed = true;
            }
            taken.insert((row.org_id, key.clone()), row.id);
            if shown != row.display_name || key != row.display_name_key {
                changes.push((row, shown, key, renamed));
            }
        }

        // Two passes, so no intermediate state collides with a key that is about to change: first a
        // placeholder no real key can hold (it starts with a control character), then the new key.
        for (row, ..) in &changes {
            let placeholder = format!("\u{1}{}", row.id);
            let update = Query::update()
                .table(ApiKeys::Table)
                .value(ApiKeys::DisplayNameKey, placeholder)
                .and_where(Expr::col(ApiKeys::Id).eq(row.id))
                .to_owned();
            db.execute(&update).await?;
        }
        for (row, shown, key, renamed) in &changes {
            let update = Query::update()
                .table(ApiKeys::Table)
                .value(ApiKeys::DisplayName, shown.as_str())
                .value(ApiKeys::DisplayNameKey, key.as_str())
                .and_where(Expr::col(ApiKeys::Id).eq(row.id))
                .to_owned();
            db.execute(&update).await?;
            if *renamed {
                let mut audit = Query::insert();
                audit
                    .into_table(AuditEvents::Table)
                    .columns([
                        AuditEvents::Id,
                        AuditEvents::OrgId,
                        AuditEvents::ActorType,
                        AuditEvents::ActorId,
                        AuditEvents::ActorName,
                        AuditEvents::Action,
                        AuditEvents::KeyId,
                        AuditEvents::ChangedFields,
                        AuditEvents::Time,
                    ])
                    .values([
                        Uuid::new_v4().into(),
                        row.org_id.into(),
                        "SYSTEM".into(),
                        "migration".into(),
                        "migration".into(),
                        "UPDATE".into(),
                        row.id.into(),
                        r#"["display_name"]"#.into(),
                        Utc::now().into(),
                    ])
                    .map_err(|e| DbErr::Custom(format!("audit event of a renamed key: {e}")))?;
                db.execute(&audit).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // The old keys were lower-cased names; the NFC names and their folded keys stay valid for the
        // previous version's code, so there is nothing to undo.
        Ok(())
    }
}
