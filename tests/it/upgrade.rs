//! Upgrades in place: a database written by the previous version (only its migrations applied, its
//! rows as it wrote them) is migrated by this version at startup without losing a key or a credential.

use apikeys::{
    auth::{Credential, Secret, hashing::Hasher},
    pb,
    store::{
        Store, StoreConfig,
        entities::{api_key, api_key_permission, org},
        migration::Migrator,
    },
};
use chrono::{Duration as Age, Utc};
use sea_orm::{ActiveValue::Set, EntityTrait as _};
use sea_orm_migration::MigratorTrait as _;
use tonic::Code;
use uuid::Uuid;

use crate::harness::*;

/// Writes a key as the previous version did: display name as entered, key lower-cased.
async fn old_key(store: &Store, org_id: Uuid, name: &str, permissions: &[&str], age_minutes: i64) -> Credential {
    let credential = Credential { key_id: Uuid::new_v4(), secret: Secret::generate().unwrap() };
    let hash = Hasher::new(&fast_hashing()).unwrap().hash(&credential.secret).await.unwrap();
    let time = Utc::now() - Age::minutes(age_minutes);
    let model = api_key::ActiveModel {
        id: Set(credential.key_id),
        org_id: Set(org_id),
        display_name: Set(name.to_owned()),
        display_name_key: Set(name.to_lowercase()),
        description: Set(String::new()),
        secret_hash: Set(hash.0),
        app_id: Set(None),
        created_by_type: Set("SYSTEM".into()),
        created_by_id: Set("bootstrap".into()),
        created_by_name: Set("bootstrap".into()),
        updated_by_type: Set("SYSTEM".into()),
        updated_by_id: Set("bootstrap".into()),
        updated_by_name: Set("bootstrap".into()),
        create_time: Set(time),
        update_time: Set(time),
        version: Set(1),
        // Columns of later migrations are not in this schema yet.
        ..Default::default()
    };
    api_key::Entity::insert(model).exec(store.connection()).await.unwrap();
    let rows = permissions
        .iter()
        .map(|p| api_key_permission::ActiveModel { key_id: Set(credential.key_id), permission: Set((*p).to_owned()) });
    if !permissions.is_empty() {
        api_key_permission::Entity::insert_many(rows).exec(store.connection()).await.unwrap();
    }
    credential
}

/// The first migration set (before Unicode-aware names) wrote look-alike names as distinct keys.
/// After the upgrade every key and credential is still there, names are NFC with folded keys, and
/// the newer of two look-alikes is renamed with its ID, on the audit record.
#[tokio::test]
async fn a_database_of_the_previous_version_upgrades_without_losing_keys() {
    let db = TestDb::new().await;
    let config = db.config();
    std::fs::create_dir_all(&config.data_dir).unwrap();
    let store = Store::connect(&StoreConfig {
        url: config.database_url(),
        max_connections: 2,
        acquire_timeout: std::time::Duration::from_secs(5),
    })
    .await
    .unwrap();
    Migrator::up(store.connection(), Some(1)).await.unwrap();

    let org_id = Uuid::new_v4();
    let org = org::ActiveModel {
        id: Set(org_id),
        name: Set("default".into()),
        default_group: Set("default".into()),
        create_time: Set(Utc::now()),
        ..Default::default()
    };
    org::Entity::insert(org).exec(store.connection()).await.unwrap();
    let catalog: Vec<&str> = vec![
        "api_keys_admin",
        "create_incident",
        "edit_all_incidents_fields",
        "edit_data",
        "read_all_incidents",
        "read_data",
        "read_function",
        "read_playbook",
    ];
    let admin = old_key(&store, org_id, "Administrator", &catalog, 30).await;
    let older = old_key(&store, org_id, "Café Ingest", &["read_data"], 20).await;
    let newer = old_key(&store, org_id, "CAFE\u{301} INGEST", &["read_data"], 10).await;
    let plain = old_key(&store, org_id, "Re\u{301}sume\u{301} Bot", &[], 5).await;
    store.connection().clone().close().await.unwrap();

    let app = TestApp::start(db, config).await;
    assert!(app.admin_token.is_empty(), "an existing database is not bootstrapped again");
    let admin_client = app.client_as(&admin.token()).await;
    let keys = admin_client.list(Default::default()).await.unwrap().api_keys;
    assert_eq!(keys.len(), 4, "no key lost: {keys:?}");
    assert!(
        keys.iter().all(|k| k.expire_time.is_none()
            && k.state() == pb::api_key::State::Active
            && k.allowed_cidrs.is_empty()
            && k.rate_limit.is_none()
            && k.delete_time.is_none()),
        "existing keys stay enabled, never expire, are not deleted and have no restrictions: {keys:?}"
    );
    let name_of = |id: Uuid| keys.iter().find(|k| k.id == id.to_string()).unwrap().display_name.clone();
    assert_eq!(name_of(older.key_id), "Café Ingest", "the older look-alike keeps its name");
    let renamed = name_of(newer.key_id);
    assert_eq!(renamed, format!("CAFÉ INGEST ({})", &newer.key_id.simple().to_string()[..8]));
    assert_eq!(name_of(plain.key_id), "Résumé Bot", "stored in NFC");

    let mut client = app.client().await;
    for credential in [&admin, &older, &newer, &plain] {
        authenticate_token(&mut client, &credential.token(), &[]).await.expect("every credential still works");
    }
    let events = app.store.audit_events(newer.key_id).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!((events[0].actor_id.as_str(), events[0].action.as_str()), ("migration", "UPDATE"));
    assert!(app.store.audit_events(older.key_id).await.unwrap().is_empty(), "unchanged keys get no event");

    // The new keys enforce the rule from now on, and the renamed key can take a free name.
    assert_status(admin_client.create("résumé bot", &[]).await, Code::AlreadyExists, "DISPLAY_NAME_TAKEN");
    let rename = pb::UpdateApiKeyRequest {
        api_key: Some(pb::ApiKey {
            id: newer.key_id.to_string(),
            display_name: "Café Export".into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["display_name".into()] }),
        ..Default::default()
    };
    assert_eq!(admin_client.update(rename).await.unwrap().display_name, "Café Export");

    // Soft delete came later: an old key deleted now frees its name and can come back.
    admin_client.delete(&plain.key_id.to_string(), "", false).await.unwrap();
    admin_client.create("résumé bot", &[]).await.expect("a deleted key's name is free");
    assert_status(
        admin_client.undelete(&plain.key_id.to_string(), "").await,
        Code::AlreadyExists,
        "DISPLAY_NAME_TAKEN",
    );
}
